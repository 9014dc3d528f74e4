"""The book's "tensorize and stack": each split's PNGs as one uint8 array, in canonical order.

Plain NumPy and Pillow (no torch import: it costs more than the work). PNGs are decoded by a pool
of processes, one per core, in large chunks; the arrays are written as safetensors, never pickle.
"""

from __future__ import annotations

import itertools
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from mnist_basics import atomic
from mnist_basics.errors import UserError

log = logging.getLogger("mnist_basics")

SPLITS = ("train", "valid")
MAX_LISTED = 20  # problems named in one error, so a broken folder doesn't flood the terminal


def find_dataset(raw: Path) -> Path:
    """The one dataset folder that the download stage wrote under data/raw."""
    found = sorted(p for p in raw.iterdir() if p.is_dir()) if raw.is_dir() else []
    if len(found) != 1:
        raise UserError(
            f"{raw}: expected one dataset folder from the download stage, found {found}"
        )
    return found[0]


def list_split(root: Path, problems: list[str]) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """PNG paths of one split in canonical order (digit, then MNIST index as a number).

    Returns (paths, labels, indices); appends every name that breaks fast.ai's layout to problems.
    """
    if not root.is_dir():
        problems.append(f"{root}: split folder missing")
        return [], np.empty(0, np.int64), np.empty(0, np.int64)
    entries: list[tuple[int, int, Path]] = []
    for folder in sorted(root.iterdir()):
        if not (folder.is_dir() and folder.name.isdigit() and len(folder.name) == 1):
            problems.append(f"{folder}: not a digit folder (expected 0-9)")
            continue
        pngs = 0
        for f in sorted(folder.iterdir()):
            if f.suffix == ".png" and f.stem.isdigit() and f.is_file():
                entries.append((int(folder.name), int(f.stem), f))
                pngs += 1
            else:
                problems.append(f"{f}: not an <index>.png file")
        if pngs == 0:
            problems.append(f"{folder}: no images")
    if not entries:
        problems.append(f"{root}: no images")
    entries.sort(key=lambda e: (e[0], e[1]))
    labels = np.fromiter((e[0] for e in entries), np.int64, len(entries))
    indices = np.fromiter((e[1] for e in entries), np.int64, len(entries))
    return [e[2] for e in entries], labels, indices


def _raise_problems(problems: list[str]) -> None:
    if not problems:
        return
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    raise UserError(f"{len(problems)} bad input file(s):\n  " + "\n  ".join(shown) + more)


def _decode_chunk(paths: list[str]) -> tuple[bytes, list[str]]:
    """Decode PNGs into one buffer of 784 bytes each; name every file not 28x28 in mode L."""
    out = bytearray(len(paths) * 784)
    problems = []
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                if im.size != (28, 28) or im.mode != "L":
                    problems.append(
                        f"{p}: {im.size[0]}x{im.size[1]} mode {im.mode}, expected 28x28 mode L"
                    )
                    continue
                out[i * 784 : (i + 1) * 784] = im.tobytes()
        except (OSError, SyntaxError, ValueError) as e:
            problems.append(f"{p}: not a readable PNG ({e.__class__.__name__})")
    return bytes(out), problems


def decode_images(paths: list[Path], problems: list[str], workers: int | None = None) -> np.ndarray:
    """All images as uint8 [N, 28, 28], decoded by `workers` processes (default: every core);
    every file that does not decode to 28x28 mode L is appended to problems."""
    workers = workers or os.cpu_count() or 1
    names = [str(p) for p in paths]
    n_chunks = max(1, min(len(names) // 2000, workers * 4)) if workers > 1 else 1
    bounds = [k * len(names) // n_chunks for k in range(n_chunks + 1)]
    chunks = [names[a:b] for a, b in itertools.pairwise(bounds)]
    if workers == 1 or len(chunks) == 1:
        results = [_decode_chunk(c) for c in chunks]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_decode_chunk, chunks))
    problems.extend(p for _, probs in results for p in probs)
    buf = b"".join(r[0] for r in results)
    return np.frombuffer(buf, np.uint8).reshape(len(paths), 28, 28)


def tensorize(raw: Path, out_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Stack both splits of the dataset under `raw` into out_dir/{train,valid}.safetensors.

    Checks everything before writing anything: all problems are reported in one error.
    """
    dataset = find_dataset(raw)
    problems: list[str] = []
    listed = {s: list_split(dataset / s, problems) for s in SPLITS}
    splits = {
        s: {"images": decode_images(paths, problems), "labels": labels, "indices": indices}
        for s, (paths, labels, indices) in listed.items()
    }
    _raise_problems(problems)
    train_digits = sorted(set(splits["train"]["labels"].tolist()))
    valid_digits = sorted(set(splits["valid"]["labels"].tolist()))
    if train_digits != valid_digits:
        raise UserError(f"{dataset}: train has digits {train_digits} but valid has {valid_digits}")
    with atomic.atomic_path(out_dir, is_dir=True) as tmp:
        for s, arrays in splits.items():
            # One metadata key: safetensors orders several at random, and the bytes must not vary.
            save_file(arrays, tmp / f"{s}.safetensors", metadata={"dataset": dataset.name})
    for s, arrays in splits.items():
        for d in train_digits:
            n = int((arrays["labels"] == d).sum())
            log.info("%s %ds: [%d, 28, 28]", s, d, n)
    return splits
