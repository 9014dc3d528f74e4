"""data/raw.zip: the download stage's PNG tree as one file, byte for byte the same on every build.

DVC walks and state-checks every file of a directory output on each `dvc status` and
`dvc exp run` (14,434 PNGs cost ~1.9 s a command); one archive costs one check (DVC's own advice
for many small files, treeverse/dvc#7681). Members are `<dataset>/{train,valid}/<digit>/<index>.png`
in fast.ai's layout, stored uncompressed (PNGs already are), in canonical order (split, digit,
MNIST index as a number), with a fixed date, mode and creator: the same images give the same
bytes, so dvc.lock's MD5 of the zip holds across machines and runs.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from mnist_basics.errors import UserError

SPLITS = ("train", "valid")
DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: no clock in the bytes
FILE_MODE = 0o100644  # a regular file, rw-r--r--
UNIX = 3  # create_system: the mode bits above are Unix's, whichever OS packed the zip
LAYOUT = "<dataset>/{train,valid}/<digit>/<index>.png (fast.ai's layout)"


def member_key(name: str) -> tuple:
    """Canonical order: split, digit, MNIST index as a number (so 10.png after 8.png);
    any name outside the layout after those, by name."""
    parts = name.split("/")
    if len(parts) == 4 and parts[1] in SPLITS and parts[2].isdecimal():
        stem, _, ext = parts[3].rpartition(".")
        if ext == "png" and stem.isascii() and stem.isdecimal():
            return (0, parts[0], SPLITS.index(parts[1]), int(parts[2]), int(stem), name)
    return (1, name)


def pack(tree: Path, target: Path) -> int:
    """Zip every file under `tree` as members named relative to it; return how many.

    Writes `target` directly: the caller gives a temporary path (atomic.atomic_path).
    """
    names = []
    for folder, _, files in os.walk(tree):
        rel = PurePosixPath(Path(folder).relative_to(tree).as_posix())
        names += [str(rel / f) if str(rel) != "." else f for f in files]
    names.sort(key=member_key)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for name in names:
            info = zipfile.ZipInfo(name, DATE_TIME)
            info.create_system = UNIX
            info.external_attr = FILE_MODE << 16
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, (tree / name).read_bytes())
    return len(names)


def unsafe(name: str) -> str | None:
    """Why a member name could point outside the folder it would be extracted to, else None.

    The rules of download.archive's tar check, in plain string tests (14,434 names: ~5 ms).
    """
    if name.startswith(("/", "\\")) or name[1:2] == ":":
        return "absolute path"
    if ".." in name.split("/") or "\\" in name or "\x00" in name:
        return "path leaves the folder"
    return None


def open_zip(path: Path) -> zipfile.ZipFile:
    """The zip at `path`, its member names checked; one UserError line if it is not one."""
    expected = (
        f"expected the download stage's zip of PNGs, {LAYOUT}; `dvc repro download` rewrites it"
    )
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {expected}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable zip ({e}); {expected}") from None
    for name in zf.namelist():
        if why := unsafe(name):
            zf.close()
            raise UserError(f"{path}: refused member {name!r}: {why}")
    return zf


_LOCAL_HEADER = struct.Struct("<4s22sHH")  # signature, fixed fields, name and extra lengths
# (name, offset of its local header, stored size, compression method, CRC-32) of one member.
Span = tuple[str, int, int, int, int]


def spans(zf: zipfile.ZipFile, names: list[str]) -> list[Span]:
    """Where each named member's bytes are, so a worker reads them without parsing the central
    directory again (~60 ms for 14,434 members, per ZipFile opened)."""
    info = {i.filename: i for i in zf.infolist()}
    return [
        (n, info[n].header_offset, info[n].compress_size, info[n].compress_type, info[n].CRC)
        for n in names
    ]


def read(f: BinaryIO, span: Span) -> bytes:
    """One member's content, its local header and CRC-32 checked; zipfile.BadZipFile if broken.

    Stored and deflated members only: the download stage stores, `zip -r` deflates.
    """
    _, offset, size, method, crc = span
    f.seek(offset)
    sig, _, n_name, n_extra = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size).ljust(30, b"\0"))
    if sig != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local header")
    f.seek(n_name + n_extra, os.SEEK_CUR)
    data = f.read(size)
    if len(data) != size:
        raise zipfile.BadZipFile("truncated")
    if method == zipfile.ZIP_DEFLATED:
        data = zlib.decompress(data, -15)
    elif method != zipfile.ZIP_STORED:
        raise zipfile.BadZipFile(f"compression method {method} (only stored or deflated)")
    if zlib.crc32(data) != crc:
        raise zipfile.BadZipFile("bad CRC-32")
    return data
