"""The four original IDX files: their published MD5s (of the uncompressed files, as mirrors
recompress), so that every source that ends here is proven to give MNIST's exact pixels."""

import gzip
import hashlib
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnist_basics.errors import UserError
from mnist_basics.layout import SPLITS, Split


class IdxFile(NamedTuple):
    """One of the four original IDX files: its name, published size and MD5 of its content."""

    name: str
    size: int
    md5: str

    @property
    def gz(self) -> str:
        return self.name + ".gz"


IDX_FILES = (  # in pairs of images and labels: train, then valid (t10k)
    IdxFile("train-images-idx3-ubyte", 47040016, "6bbc9ace898e44ae57da46a324031adb"),
    IdxFile("train-labels-idx1-ubyte", 60008, "a25bea736e30d166cdddb491f175f624"),
    IdxFile("t10k-images-idx3-ubyte", 7840016, "2646ac647ad5339dbf082846283269ea"),
    IdxFile("t10k-labels-idx1-ubyte", 10008, "27ae3e4e09519cfbb04c329615203637"),
)


def verify(f: IdxFile, content: bytes) -> None:
    """Accept the content only if it is byte-for-byte the published file."""
    found = hashlib.md5(content).hexdigest()  # noqa: S324
    if len(content) != f.size or found != f.md5:
        raise UserError(
            f"{f.name}: checksum mismatch ({len(content)} bytes, MD5 {found}; expected "
            f"{f.size} bytes, MD5 {f.md5})"
        )


def gunzip(path: Path, f: IdxFile) -> bytes:
    """Decompress and verify one .gz, reading at most one byte more than the file should have."""
    try:
        with gzip.open(path, "rb") as g:
            content = g.read(f.size + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path.name}: not a valid gzip file: {e}") from e
    verify(f, content)
    return content


def parse(content: bytes) -> np.ndarray:
    """An IDX file of unsigned bytes as its array (only verified files reach here)."""
    ndim = content[3]
    shape = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    return np.frombuffer(content, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX file of a uint8 array: magic 0x08 (unsigned byte) and ndim, each size, the data."""
    return struct.pack(f">{1 + array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()


def select(contents: dict[str, bytes], digits: tuple[int, ...]) -> dict[str, Split]:
    """fast.ai's splits of `digits` (valid: t10k's), each image keeping its index in its file."""
    out = {}
    for split, images, labels in zip(SPLITS, IDX_FILES[::2], IDX_FILES[1::2], strict=True):
        all_labels = parse(contents[labels.name])
        keep = np.flatnonzero(np.isin(all_labels, digits))
        pixels = parse(contents[images.name])[keep]
        out[split] = Split(pixels, all_labels[keep].astype(np.int64), keep.astype(np.int64))
    return out
