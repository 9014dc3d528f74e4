"""Run a function over chunks in worker processes: tens of thousands of small PNGs are CPU work."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from mnist_basics.progress import bar

T = TypeVar("T")

# Below this many items, starting processes costs more than it saves.
MIN_PARALLEL = 4000


def workers() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Consecutive slices of at most `size` items."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_chunks(fn: Callable[..., T], chunks: list[tuple], sizes: list[int], desc: str) -> list[T]:
    """fn(*chunk) for each chunk, in processes when the work is big; results in chunk order.

    `sizes` (items per chunk) drives the progress bar.
    """
    total = sum(sizes)
    n = min(workers(), len(chunks))
    with bar(total=total, unit="img", desc=desc) as pb:
        if total < MIN_PARALLEL or n < 2:
            out = []
            for args, size in zip(chunks, sizes, strict=True):
                out.append(fn(*args))
                pb.update(size)
            return out
        results: dict[int, T] = {}
        with ProcessPoolExecutor(max_workers=n) as pool:
            futures = {pool.submit(fn, *args): i for i, args in enumerate(chunks)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                pb.update(sizes[futures[fut]])
        return [results[i] for i in range(len(chunks))]
