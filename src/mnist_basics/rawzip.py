"""data/raw.zip: the PNG tree in fast.ai's layout as one file (one DVC check, not one a PNG),
the same bytes for the same pixels, so dvc.lock's MD5 of it holds across sources and machines."""

import logging
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnist_basics import archives, layout
from mnist_basics.errors import UserError
from mnist_basics.layout import Split

DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: no clock in the bytes
FILE_MODE = 0o100644
EXPECTED = "expected the download stage's zip of PNGs; `dvc repro -f download` rewrites it"
MAX_BYTES = 112 << 20  # archives.MAX_MEMBERS PNGs of about 1 kB (all of MNIST's make 72 MB)
# of the central directory, which zipfile reads and parses whole (~9 bytes kept per byte) before a
# member can be counted; an entry of ours is under 100 bytes
MAX_DIRECTORY = archives.MAX_MEMBERS * 128


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# 28x28, 8-bit greyscale, no interlace
_HEAD = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
_TAIL = _chunk(b"IEND", b"")


def stored(data: bytes) -> bytes:
    """`data` (under 64 KiB) as a zlib stream of one stored, uncompressed, deflate block: bytes
    no compressor chooses (zlib and zlib-ng, Fedora's and Windows Python's, differ at a level)."""
    size = struct.pack("<BHH", 1, len(data), len(data) ^ 0xFFFF)  # final block, stored
    return b"\x78\x01" + size + data + struct.pack(">I", zlib.adler32(data))


def encode_png(image: np.ndarray) -> bytes:
    """A 28x28 uint8 image as a PNG that Pillow opens as mode L: rows unfiltered and stored.
    Several times faster than Pillow's `save`, on the PNGs a user's first `dvc repro` writes."""
    rows = np.zeros((28, 29), np.uint8)  # each row: filter byte 0 (none), then 28 pixels
    rows[:, 1:] = image
    return _HEAD + _chunk(b"IDAT", stored(rows.tobytes())) + _TAIL


def write(path: Path, dataset: str, splits: dict[str, Split]) -> int:
    """Write the zip at `path` (a temporary name: the caller renames it); return the PNG count."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for split in layout.SPLITS:
            s = splits[split]
            for i in np.lexsort((s.indices, s.labels)):
                name = f"{dataset}/{split}/{s.labels[i]}/{s.indices[i]}.png"
                info = zipfile.ZipInfo(name, DATE_TIME)
                info.create_system = 3  # Unix, so the mode bits mean the same everywhere
                info.external_attr = FILE_MODE << 16
                zf.writestr(info, encode_png(s.images[i]))
        return len(zf.infolist())


def directory_bytes(path: Path, size: int) -> int:
    """The size of a zip's central directory as its end records say, read where zipfile reads
    them (the end record, with no comment, then a zip64 record just before it); -1 for end
    records the download stage does not write."""
    with path.open("rb") as f:
        f.seek(max(0, size - 98))
        tail = f.read(98)
    end, locator, end64 = tail[-22:], tail[-42:-22], tail[-98:-42]
    if len(end) < 22 or end[:4] != b"PK\x05\x06" or end[20:] != b"\0\0":
        return -1
    if locator[:4] != b"PK\x06\x07":
        return int.from_bytes(end[12:16], "little")
    if end64[:4] != b"PK\x06\x06" or int.from_bytes(locator[8:16], "little") != size - 98:
        return -1
    return int.from_bytes(end64[40:48], "little")


def read(path: Path) -> tuple[str, dict[str, Split]]:
    """The dataset's name and its splits: every member checked, then each PNG decoded by Pillow."""
    try:
        if (size := path.stat().st_size) > MAX_BYTES:
            raise UserError(f"{path}: {size:,} bytes, more than {MAX_BYTES:,}; {EXPECTED}")
        if not 0 <= (listed := directory_bytes(path, size)) <= MAX_DIRECTORY:
            why = f"a zip directory of {listed:,} bytes, more than {MAX_DIRECTORY:,}"
            why = "not a readable zip (no end record as the stage writes it)" if listed < 0 else why
            raise UserError(f"{path}: {why}; {EXPECTED}")
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {EXPECTED}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable zip ({e}); {EXPECTED}") from None
    with zf:
        entries = archives.zip_entries(zf, str(path))
        parts = [layout.path_parts(n) for n in zf.namelist()]
        tops = sorted({p[0] for p in parts if len(p) > 1})
        if len(tops) != 1:
            raise UserError(f"{path}: expected one dataset folder, found {tops}; {EXPECTED}")
        logging.getLogger("mnist_basics").info("decoding %d PNGs of %s", len(entries), path)
        return tops[0], layout.read_tree(entries, str(path))
