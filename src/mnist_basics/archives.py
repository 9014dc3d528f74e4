"""The archive-safety rules: what a .tgz, a zip or a folder may hold before a byte of it is read.

An archive may come from a user's URL. Nothing is ever extracted to disk (members are read into
memory and decoded), and still a member that could point outside its folder (an absolute path,
`..`), a link, a device or fifo is refused by name, and member count and sizes are capped, so a
hostile or broken archive is one clear error, not a filled disk.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from mnist_basics.errors import UserError
from mnist_basics.layout import Entry

MAX_MEMBERS = 100_000  # fast.ai's mnist_png.tgz has about 70,000
MAX_BYTES = 1 << 30
MAX_MEMBER_BYTES = 1 << 20  # a 28x28 PNG is under 1 KB


def unsafe(name: str) -> str | None:
    """Why a member name could point outside the folder it belongs to, else None."""
    if name.startswith(("/", "\\")) or name[1:2] == ":":
        return "absolute path"
    if ".." in name.split("/") or "\\" in name or "\x00" in name:
        return "path leaves the folder"
    return None


class _Budget:
    """Counts members and bytes, so an archive bomb is stopped before it fills memory."""

    def __init__(self, where: str) -> None:
        self.where, self.members, self.bytes = where, 0, 0

    def take(self, name: str, size: int) -> None:
        self.members += 1
        self.bytes += max(size, 0)
        if self.members > MAX_MEMBERS:
            raise UserError(f"{self.where}: more than {MAX_MEMBERS:,} members")
        if size > MAX_MEMBER_BYTES or self.bytes > MAX_BYTES:
            raise UserError(f"{self.where}: refused member {name!r}: larger than expected")
        if why := unsafe(name):
            raise UserError(f"{self.where}: refused member {name!r}: {why}")


def tar_entries(path: Path) -> list[Entry]:
    """The regular files of a tar (gzip'd or not), each checked; links and devices refused."""
    budget, entries = _Budget(path.name), []
    try:
        tf = tarfile.open(path, "r:*")  # noqa: SIM115 - kept open for the entries' readers
        for m in tf:
            budget.take(m.name, m.size)
            if m.issym() or m.islnk():
                kind = "symlink" if m.issym() else "hard link"
                raise UserError(f"{path.name}: refused member {m.name!r}: {kind}")
            if not (m.isfile() or m.isdir()):
                raise UserError(f"{path.name}: refused member {m.name!r}: device or fifo")
            if m.isfile():
                entries.append((m.name, partial(_read_file, tf, m)))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{path.name}: cannot read the archive: {e}") from e
    return entries


def _read_file(tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    return tf.extractfile(m).read()  # type: ignore[union-attr]  # a regular file: never None


def open_zip(path: Path, expected: str) -> zipfile.ZipFile:
    """The zip at `path` with its member names and sizes checked; one UserError if it is not."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {expected}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable zip ({e}); {expected}") from None
    budget = _Budget(str(path))
    try:
        for info in zf.infolist():
            budget.take(info.filename, info.file_size)
    except UserError:
        zf.close()
        raise
    return zf


def zip_entries(zf: zipfile.ZipFile) -> Iterator[Entry]:
    """The files of a checked zip (reading one checks its CRC)."""
    for info in zf.infolist():
        if not info.is_dir():
            yield info.filename, partial(zf.read, info)


def folder_entries(folder: Path) -> list[Entry]:
    """The files under a user's folder, by their paths relative to it."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(root).relative_to(folder)
        for f in files:
            if not f.startswith("."):
                p = Path(root) / f
                entries.append(((rel / f).as_posix(), p.read_bytes))
    return entries
