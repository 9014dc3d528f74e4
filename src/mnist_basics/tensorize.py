"""The book's "tensorize and stack": each split's PNGs as one uint8 array, in canonical order.

The PNGs are the members of data/raw.zip, decoded by Pillow as the book does (`Image.open`);
the arrays are written as safetensors, never pickle. No torch import: it costs more than the work.
"""

import logging
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from mnist_basics import atomic, rawzip
from mnist_basics.errors import BadFile


def read_split(path: Path, framework: str = "pt") -> dict:
    """The arrays of a split tensorize wrote (NumPy's or torch's `framework`); one clear line if
    they are not what it writes."""
    needs = ("images", "labels")
    arrays, _ = atomic.read_safetensors(path, "a tensors", "tensorize", needs, framework)
    x, y = arrays["images"], arrays["labels"]
    kind = {name: str(a.dtype).removeprefix("torch.") for name, a in arrays.items()}
    if kind["images"] != "uint8" or len(x.shape) != 3 or tuple(x.shape[1:]) != (28, 28):
        why = f"images {kind['images']} {list(x.shape)}, not uint8 [N, 28, 28]"
    elif len(x) == 0:
        why = "no images"
    elif kind["labels"] != "int64" or tuple(y.shape) != (len(x),):
        why = f"labels {kind['labels']} {list(y.shape)}, not int64 [{len(x)}], one per image"
    elif not 0 <= int(y.min()) <= int(y.max()) <= 9:
        why = f"a label {int(y.max()) if y.max() > 9 else int(y.min())} that is no digit 0-9"
    else:
        return arrays
    raise BadFile(
        path,
        f"not a tensors file as the tensorize stage writes it ({why})",
        "`dvc repro -f tensorize` writes it again",
    )


def tensorize(raw_zip: Path, out_dir: Path) -> None:
    """Stack both splits of `raw_zip` into out_dir/{train,valid}.safetensors, all or nothing."""
    dataset, splits = rawzip.read(raw_zip)  # it names a digit missing from either split
    with atomic.atomic_path(out_dir, is_dir=True) as tmp:
        for name, s in splits.items():
            # one metadata key: safetensors orders several at random, and the bytes must not vary
            arrays = {"images": s.images, "labels": s.labels, "indices": s.indices}
            # written by Python: a full disk is an OSError (one line), not a SafetensorError
            (tmp / f"{name}.safetensors").write_bytes(save(arrays, {"dataset": dataset}))
    for name, s in splits.items():
        for digit, n in zip(*np.unique(s.labels, return_counts=True), strict=True):
            logging.getLogger("mnist_basics").info("%s %ds: [%d, 28, 28]", name, digit, n)
