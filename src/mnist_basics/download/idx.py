"""The four original IDX files: read, check against the published MD5s, parse, rebuild.

Three sources (the mirrors, a user's IDX folder, the wheel's pickle) all end here, as the four
uncompressed byte strings; checking those MD5s is what proves each gives MNIST's exact pixels.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_basics.download.known import (
    IDX_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    IdxFile,
)
from mnist_basics.errors import UserError
from mnist_basics.layout import Split

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


@dataclass(frozen=True)
class Mnist:
    """MNIST as arrays: uint8 images [N, 28, 28] and uint8 labels [N], per original file."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def select(self, digits: tuple[int, ...]) -> dict[str, Split]:
        """fast.ai's splits of `digits`: train from MNIST's training file, valid from t10k; each
        image keeps its index in its file, as fast.ai's names do."""
        out = {}
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("valid", self.test_images, self.test_labels),
        ):
            keep = np.flatnonzero(np.isin(labels, digits))
            out[split] = Split(images[keep], labels[keep].astype(np.int64), keep.astype(np.int64))
        return out


def verify(f: IdxFile, content: bytes) -> None:
    """Accept the content only if it is byte-for-byte the published file."""
    if len(content) != f.size or hashlib.md5(content).hexdigest() != f.md5:  # noqa: S324
        found = hashlib.md5(content).hexdigest()  # noqa: S324
        raise UserError(
            f"{f.name}: checksum mismatch ({len(content)} bytes, MD5 {found}; expected "
            f"{f.size} bytes, MD5 {f.md5})"
        )


def gunzip(path: Path, f: IdxFile) -> bytes:
    """Decompress one .gz, reading at most one byte more than the file should have."""
    try:
        with gzip.open(path, "rb") as g:
            content = g.read(f.size + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path.name}: not a valid gzip file: {e}") from e
    verify(f, content)
    return content


def parse_images(content: bytes) -> np.ndarray:
    """An IDX image file's pixels as uint8 [N, 28, 28]."""
    magic, n, rows, cols = struct.unpack(">IIII", content[:16])
    if magic != IMAGES_MAGIC or (rows, cols) != (28, 28) or len(content) != 16 + n * 784:
        raise UserError("not an IDX file of 28x28 images")
    return np.frombuffer(content, np.uint8, offset=16).reshape(n, 28, 28)


def parse_labels(content: bytes) -> np.ndarray:
    """An IDX label file's labels as uint8 [N]."""
    magic, n = struct.unpack(">II", content[:8])
    if magic != LABELS_MAGIC or len(content) != 8 + n:
        raise UserError("not an IDX label file")
    return np.frombuffer(content, np.uint8, offset=8)


def images_idx(images: np.ndarray) -> bytes:
    """IDX bytes of uint8 images [N, 28, 28] (the inverse of parse_images)."""
    return struct.pack(">IIII", IMAGES_MAGIC, len(images), 28, 28) + images.tobytes()


def labels_idx(labels: np.ndarray) -> bytes:
    """IDX bytes of uint8 labels [N] (the inverse of parse_labels)."""
    return struct.pack(">II", LABELS_MAGIC, len(labels)) + labels.tobytes()


def from_contents(contents: dict[str, bytes]) -> Mnist:
    """Verify the four uncompressed files (keyed by IDX name) and parse them."""
    for f in IDX_FILES:
        verify(f, contents[f.name])
    return Mnist(
        parse_images(contents[TRAIN_IMAGES.name]),
        parse_labels(contents[TRAIN_LABELS.name]),
        parse_images(contents[TEST_IMAGES.name]),
        parse_labels(contents[TEST_LABELS.name]),
    )


def has_idx_files(folder: Path) -> bool:
    """True if the folder holds the four IDX .gz files (then it is read as IDX, not PNGs)."""
    return all((folder / f.gz).is_file() for f in IDX_FILES)


def from_folder(folder: Path) -> Mnist:
    """Read and verify the four IDX .gz files in a folder."""
    return from_contents({f.name: gunzip(folder / f.gz, f) for f in IDX_FILES})
