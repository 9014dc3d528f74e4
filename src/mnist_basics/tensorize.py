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


def list_split(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """PNG paths of one split in canonical order (digit, then MNIST index as a number).

    Returns (paths, labels, indices). Every name that breaks fast.ai's layout is reported at once.
    """
    if not root.is_dir():
        raise UserError(f"{root}: split folder missing")
    problems: list[str] = []
    entries: list[tuple[int, int, Path]] = []
    for folder in sorted(root.iterdir()):
        if not (folder.is_dir() and folder.name.isdigit() and len(folder.name) == 1):
            problems.append(f"{folder}: not a digit folder (expected 0-9)")
            continue
        pngs = 0
        for f in folder.iterdir():
            if f.suffix == ".png" and f.stem.isdigit() and f.is_file():
                entries.append((int(folder.name), int(f.stem), f))
                pngs += 1
            else:
                problems.append(f"{f}: not an <index>.png file")
        if pngs == 0:
            problems.append(f"{folder}: no images")
    if not entries and not problems:
        problems.append(f"{root}: no digit folders")
    _raise_problems(problems)
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


def decode_images(paths: list[Path], workers: int | None = None) -> np.ndarray:
    """All images as uint8 [N, 28, 28], decoded by `workers` processes (default: every core)."""
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
    _raise_problems([p for _, probs in results for p in probs])
    buf = b"".join(r[0] for r in results)
    return np.frombuffer(buf, np.uint8).reshape(len(paths), 28, 28)


def tensorize_split(root: Path) -> dict[str, np.ndarray]:
    """One split as {"images": uint8 [N,28,28], "labels": int64 [N], "indices": int64 [N]}."""
    paths, labels, indices = list_split(root)
    return {"images": decode_images(paths), "labels": labels, "indices": indices}


def tensorize(raw: Path, out_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Stack both splits of the dataset under `raw` into out_dir/{train,valid}.safetensors."""
    dataset = find_dataset(raw)
    splits = {s: tensorize_split(dataset / s) for s in SPLITS}
    train_digits = sorted(set(splits["train"]["labels"].tolist()))
    valid_digits = sorted(set(splits["valid"]["labels"].tolist()))
    if train_digits != valid_digits:
        raise UserError(f"{dataset}: train has digits {train_digits} but valid has {valid_digits}")
    with atomic.atomic_path(out_dir, is_dir=True) as tmp:
        for s, arrays in splits.items():
            meta = {"dataset": dataset.name, "digits": ",".join(map(str, train_digits))}
            save_file(arrays, tmp / f"{s}.safetensors", metadata=meta)
    for s, arrays in splits.items():
        for d in train_digits:
            n = int((arrays["labels"] == d).sum())
            log.info("%s %ds: [%d, 28, 28]", s, d, n)
    return splits
