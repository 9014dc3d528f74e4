"""data/tensors' files read back, checked to be what the tensorize stage writes."""

import hashlib
from pathlib import Path

from mnist_basics import atomic
from mnist_basics.errors import BadFile


def read_split(path: Path, framework: str = "pt") -> dict:
    """The arrays of a split (NumPy's or torch's `framework`); one line if tensorize did not
    write them."""
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


def digest(path: Path) -> bytes:
    """The split's SHA-256, which its logits carry: evaluate pairs them with its images by
    position."""
    with atomic.open_regular(path) as f:
        return hashlib.file_digest(f, "sha256").digest()
