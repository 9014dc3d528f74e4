"""The four original IDX files: read, check against the published MD5s, parse, rebuild.

Three sources (the mirrors, a user's IDX folder, the wheel's pickle) all end here, as the four
uncompressed byte strings; checking those MD5s is what proves each gives MNIST's exact pixels.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
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


def verify(f: IdxFile, content: bytes) -> None:
    """Accept the content only if it is byte-for-byte the published file."""
    found = hashlib.md5(content).hexdigest()  # noqa: S324
    if len(content) != f.size or found != f.md5:
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


def parse(content: bytes) -> np.ndarray:
    """An IDX file of unsigned bytes as its array (only verified files reach here)."""
    ndim = content[3]
    shape = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    return np.frombuffer(content, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX file of a uint8 array: magic 0x08 (unsigned byte) and ndim, each size, the data."""
    return struct.pack(f">{1 + array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()


def select(contents: dict[str, bytes], digits: tuple[int, ...]) -> dict[str, Split]:
    """Verify the four files (keyed by IDX name), then fast.ai's splits of `digits`: train from
    MNIST's training file, valid from t10k, each image keeping its index in its file."""
    for f in IDX_FILES:
        verify(f, contents[f.name])
    out = {}
    for split, images, labels in (
        ("train", TRAIN_IMAGES, TRAIN_LABELS),
        ("valid", TEST_IMAGES, TEST_LABELS),
    ):
        all_labels = parse(contents[labels.name])
        keep = np.flatnonzero(np.isin(all_labels, digits))
        pixels = parse(contents[images.name])[keep]
        out[split] = Split(pixels, all_labels[keep].astype(np.int64), keep.astype(np.int64))
    return out


def from_folder(folder: Path) -> dict[str, bytes] | None:
    """The four IDX files of a folder that holds their .gz files, each verified; else None."""
    if not all((folder / f.gz).is_file() for f in IDX_FILES):
        return None
    return {f.name: gunzip(folder / f.gz, f) for f in IDX_FILES}
