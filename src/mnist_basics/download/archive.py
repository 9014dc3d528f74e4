"""Tar extraction that trusts nothing in the archive: no path escapes, no links, no bombs.

An archive may come from a user's URL, so each member is checked before a byte is written:
absolute paths, `..`, symlinks, hard links and device/fifo members are refused (naming the
member), and member count and total size are capped. Only regular files and folders are made,
and only inside the target.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from mnist_basics.errors import UserError

MAX_MEMBERS = 100_000  # fast.ai's full mnist_png.tgz has about 70,000
MAX_BYTES = 1 << 30


def _safe_name(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path relative to the target, or UserError if it could leave the target."""
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{archive.name}: refused member {name!r}: absolute path")
    if ".." in path.parts or "\\" in name or "\x00" in name:
        raise UserError(f"{archive.name}: refused member {name!r}: path leaves the folder")
    return path


def _check_type(archive: Path, member: tarfile.TarInfo) -> None:
    """Only regular files and folders: links and special files could reach outside the target."""
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        raise UserError(f"{archive.name}: refused member {member.name!r}: {kind}")
    if not (member.isfile() or member.isdir()):
        raise UserError(f"{archive.name}: refused member {member.name!r}: device or fifo")


class _Budget:
    """Counts members and bytes, so an archive bomb is stopped before it fills the disk."""

    def __init__(self, archive: Path, max_members: int, max_bytes: int) -> None:
        self.archive, self.max_members, self.max_bytes = archive, max_members, max_bytes
        self.members = 0
        self.bytes = 0

    def take(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        self.bytes += max(member.size, 0)
        if self.members > self.max_members:
            raise UserError(f"{self.archive.name}: more than {self.max_members} members")
        if self.bytes > self.max_bytes:
            raise UserError(
                f"{self.archive.name}: refused member {member.name!r}: archive unpacks to more "
                f"than {self.max_bytes} bytes"
            )


def _write_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: str, made: set[str]) -> None:
    folder = dest if member.isdir() else os.path.dirname(dest)
    if folder not in made:
        os.makedirs(folder, exist_ok=True)
        made.add(folder)
    if member.isdir():
        return
    src = tf.extractfile(member)
    if src is None:
        raise UserError(f"refused member {member.name!r}: no data")
    with src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def extract_tar(
    archive: Path, target: Path, *, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES
) -> Path:
    """Extract `archive` (any tar, gzip'd or not) into `target`, refusing anything unsafe.

    Members are checked and written one by one while streaming, so a bad one stops the
    extraction; the caller's temporary folder then takes the partial result away.
    """
    target.mkdir(parents=True, exist_ok=True)
    root = str(target.resolve())
    budget = _Budget(archive, max_members, max_bytes)
    made: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                budget.take(member)
                rel = _safe_name(archive, member)
                _check_type(archive, member)
                # No `..`, no absolute path and no links ever made, so a join cannot escape;
                # the check below says so without a syscall per member.
                dest = os.path.normpath(os.path.join(root, *rel.parts))
                if not dest.startswith(root + os.sep):
                    raise UserError(f"{archive.name}: refused member {member.name!r}: outside")
                _write_member(tf, member, dest, made)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{archive.name}: cannot extract: {e}") from e
    return target
