"""The book's "tensorize and stack": each split's PNGs as one uint8 array, in canonical order.

The PNGs are the members of data/raw.zip, decoded by Pillow as the book does (`Image.open`);
the arrays are written as safetensors, never pickle. No torch import: it costs more than the work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from mnist_basics import atomic, rawzip
from mnist_basics.errors import UserError

log = logging.getLogger("mnist_basics")


def tensorize(raw_zip: Path, out_dir: Path) -> None:
    """Stack both splits of `raw_zip` into out_dir/{train,valid}.safetensors, all or nothing."""
    dataset, splits = rawzip.read(raw_zip)
    digits = {s: sorted(set(split.labels.tolist())) for s, split in splits.items()}
    if digits["train"] != digits["valid"]:
        raise UserError(
            f"{raw_zip}: train has digits {digits['train']} but valid has {digits['valid']}"
        )
    with atomic.atomic_path(out_dir, is_dir=True) as tmp:
        for name, s in splits.items():
            arrays = {"images": s.images, "labels": s.labels, "indices": s.indices}
            # one metadata key: safetensors orders several at random, and the bytes must not vary
            save_file(arrays, tmp / f"{name}.safetensors", metadata={"dataset": dataset})
    for name, s in splits.items():
        for d in digits["train"]:
            log.info("%s %ds: [%d, 28, 28]", name, d, int(np.sum(s.labels == d)))
