"""The book's "tensorize and stack": data/raw.zip's PNGs as one uint8 array per split, written as
safetensors, never pickle. No torch import: it costs more than the work."""

import logging
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from mnist_basics import atomic, rawzip


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
