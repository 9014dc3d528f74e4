"""Try each source in order; the first that delivers verified data serves, atomically.

The splits a source gives are written into a temporary zip beside data/raw.zip and renamed into
place only when complete, so a failed source leaves nothing behind. When none serves, one
UserError names every source and why it failed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mnist_basics import layout, rawzip
from mnist_basics.atomic import atomic_path
from mnist_basics.download.fetch import describe
from mnist_basics.download.known import Urls
from mnist_basics.download.sources import SOURCE_ERRORS, Job, run
from mnist_basics.errors import UserError

log = logging.getLogger("mnist_basics")


def download(
    digits: Sequence[int],
    sources: Sequence[str],
    timeout: float,
    out_zip: str | Path,
    *,
    urls: Urls | None = None,
) -> str:
    """Write out_zip from the first source in `sources` that serves; return that source.

    Why each skipped source failed is said once: after the one that served, or in the error.
    """
    digits_t = tuple(sorted(set(digits)))
    out = Path(out_zip)
    made_parent = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    reasons: list[str] = []
    for source in sources:
        start = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(
                prefix=f".{out.name}.", suffix=".tmp", dir=out.parent
            ) as d:
                splits, detail = run(source, Job(digits_t, timeout, urls or Urls(), Path(d)))
                with atomic_path(out) as tmp:
                    n = rawzip.write(tmp, layout.dataset_name(digits_t), splits)
        except SOURCE_ERRORS as e:
            reason = describe(e).replace("\n", "\n  ")
            log.info("%s: skipped after %.1f s", source, time.monotonic() - start)
            reasons.append(f"  {source}: {reason}")
            continue
        log.info("%s: served in %.1f s (%s, %d PNGs)", source, time.monotonic() - start, detail, n)
        if reasons:
            log.info("the sources skipped, and why:\n%s", "\n".join(reasons))
        return source
    if made_parent and not any(out.parent.iterdir()):
        out.parent.rmdir()
    raise UserError(
        f"no source delivered MNIST digits {list(digits_t)}; tried in order:\n" + "\n".join(reasons)
    )
