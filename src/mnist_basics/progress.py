"""Progress bars on a terminal, silence in a CI log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def bar(iterable: Iterable | None = None, **kw: Any) -> tqdm:
    """A tqdm bar that shows only when stderr is a terminal (tqdm's `disable=None`)."""
    kw.setdefault("disable", None)
    kw.setdefault("leave", False)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)
