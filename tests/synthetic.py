"""A tiny synthetic MNIST: each digit's glyph, drawn 28x28 and jittered, in fast.ai's layout.

Learnable (a linear model separates it) and small enough for a real `dvc repro` in seconds.
Written as a tree (a user's source folder) and, for tensorize, as the members of a zip.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def glyph(digit: int) -> np.ndarray:
    """The digit drawn white-on-black, 28x28 uint8 (ink = 255 as in MNIST)."""
    small = Image.new("L", (8, 12), 0)
    ImageDraw.Draw(small).text((1, 0), str(digit), fill=255, font=ImageFont.load_default(size=11))
    big = small.resize((14, 20), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (28, 28), 0)
    canvas.paste(big, (7, 4))
    return np.asarray(canvas)


def make_images(digit: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n jittered copies of `digit`'s glyph: shifted up to 2 px, scaled ink, speckle noise."""
    base = glyph(digit).astype(np.float32)
    out = np.empty((n, 28, 28), np.uint8)
    for i in range(n):
        dy, dx = rng.integers(-2, 3, size=2)
        img = np.roll(base, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.6, 1.0)
        img += rng.normal(0, 25, size=img.shape) * (rng.random(img.shape) < 0.1)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def write_fastai_tree(
    root: Path, digits: list[int], n_train: int = 40, n_valid: int = 12, seed: int = 0
) -> dict[str, dict[int, list[int]]]:
    """Write root/{train,valid}/<digit>/<index>.png; return the indices written per split/digit.

    Indices interleave digits like MNIST's, so names are not in digit order.
    """
    rng = np.random.default_rng(seed)
    written: dict[str, dict[int, list[int]]] = {}
    for split, n in (("train", n_train), ("valid", n_valid)):
        written[split] = {}
        for k, d in enumerate(digits):
            idx = [k + len(digits) * i for i in range(n)]
            folder = root / split / str(d)
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in zip(idx, make_images(d, n, rng), strict=True):
                Image.fromarray(img, mode="L").save(folder / f"{i}.png")
            written[split][d] = idx
    return written


def tree_members(tree: Path, dataset: str = "mnist_sample") -> dict[str, bytes]:
    """Every file of `tree` as a zip member under `dataset`/, as data/raw.zip names them."""
    return {
        f"{dataset}/{p.relative_to(tree).as_posix()}": p.read_bytes()
        for p in sorted(tree.rglob("*"))
        if p.is_file()
    }


def write_zip(
    path: Path, members: dict[str, bytes | None], method: int = zipfile.ZIP_STORED
) -> Path:
    """A zip of `members` in the order given (None: a folder entry), however odd their names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            if data is None:
                zf.mkdir(name.rstrip("/"))
            else:
                zf.writestr(name, data)
    return path
