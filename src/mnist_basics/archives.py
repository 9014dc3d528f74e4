"""What a .tgz, a zip or a folder (maybe from a user's URL) may hold before a byte of it is read:
a hostile archive is one clear error, not a filled disk or a hung stage (docs/data.md)."""

import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

from mnist_basics.errors import UserError
from mnist_basics.layout import Entry

MAX_MEMBERS = 100_000  # fast.ai's mnist_png.tgz has about 70,000
MAX_BYTES = 1 << 30
MAX_MEMBER_BYTES = 1 << 20  # a 28x28 PNG is under 1 KB
MAX_EXTENDED_HEADER = 8192  # a pax or GNU long-name header; a PNG member's is under 1 KB
MAX_GLOBAL_RECORDS = 16  # tarfile copies them into every member; `git archive` writes one
MAX_PAX_RECORDS = 1_000_000  # of an archive: macOS's tar writes about 7 a member
MAX_EXTENDED_BYTES = 64 << 20  # of an archive's extended headers: tarfile keeps what they say
EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
EXTENDED += (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
M = TypeVar("M")


def _checked(where: str, members: Iterable[tuple[str, int, str | None, M]]) -> Iterator[M]:
    """Each (name, size, why its kind is refused or None, member), checked as it comes; hidden
    ones (a `.git` a folder source skips too) only counted, never read."""
    total = 0
    for count, (name, size, why, member) in enumerate(members, 1):
        total += max(size, 0)
        if count > MAX_MEMBERS:
            raise UserError(f"{where}: more than {MAX_MEMBERS:,} members")
        if hidden(name) and total <= MAX_BYTES:
            continue
        if size > MAX_MEMBER_BYTES or total > MAX_BYTES:
            why = "larger than expected"
        elif name.startswith(("/", "\\")) or name[1:2] == ":":
            why = "absolute path"
        elif ".." in name.split("/") or "\\" in name or "\x00" in name:
            why = "path leaves the folder"
        if why:
            raise UserError(f"{where}: refused member {name!r}: {why}")
        yield member


def _tar_kind(m: tarfile.TarInfo) -> str | None:
    """Why a member's kind is refused (only files and folders are read), else None."""
    kinds = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link"}
    return None if m.isfile() or m.isdir() else kinds.get(m.type, "device or fifo")


class _Refused(Exception):
    """A header refused: not a ReadError, which `tarfile.open` retries as another compression."""


class _Header(tarfile.TarInfo):
    """A member header that says when it is damaged, where tarfile would end the member list
    silently (a corrupt archive read short), and refuses what tarfile would read unbounded."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):
            raise  # the archive's end: a zero block, or no more data
        except tarfile.HeaderError as e:
            raise tarfile.ReadError(f"a damaged member header ({e})") from None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in EXTENDED:  # read whole, before any member reaches the caps
            count = getattr(tarfile_, "extended_count", 0) + 1
            total = getattr(tarfile_, "extended_bytes", 0) + self.size
            if self.size > MAX_EXTENDED_HEADER:
                raise _Refused(f"an extended header of {self.size:,} bytes")
            if count > MAX_MEMBERS or total > MAX_EXTENDED_BYTES:
                raise _Refused("more extended headers than a tar of PNGs needs")
            tarfile_.extended_count, tarfile_.extended_bytes = count, total  # type: ignore[attr-defined]
        member = super()._proc_member(tarfile_)  # type: ignore[misc]
        if member.size < 0:  # tarfile would read its next header from before this one, forever
            raise _Refused(f"a member of negative size ({member.size:,} bytes)")
        if len(tarfile_.pax_headers) > MAX_GLOBAL_RECORDS:
            raise _Refused("more pax global records than a tar of PNGs needs")
        member.pax_headers = {}  # read already, and tarfile keeps every member
        return member

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        # tarfile parses some pax records in quadratic time (before 3.11.10): refused first
        f = tarfile_.fileobj
        ahead = f.read(self._block(self.size))  # type: ignore[union-attr]
        why = _bad_records(ahead[: self.size])
        if not why and ahead[self.size :].strip(b"\0"):  # tarfile parses the padding too
            why = "bytes after its records"
        if why:
            raise _Refused(f"a pax header with {why}")
        records = getattr(tarfile_, "pax_records", 0) + ahead.count(b"\n")
        if records > MAX_PAX_RECORDS:
            raise _Refused("more pax records than a tar of PNGs needs")
        tarfile_.pax_records = records  # type: ignore[attr-defined]
        tarfile_.fileobj = _ReadAhead(f, ahead)
        try:
            return super()._proc_pax(tarfile_)  # type: ignore[misc]
        finally:
            tarfile_.fileobj = f

    def _refuse_sparse(self, *args: object) -> None:
        # tarfile reads a sparse member's map, unbounded, before the member reaches the caps
        raise _Refused("a sparse member (a PNG is a plain file)")

    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


class _ReadAhead:
    """The archive as tarfile reads it, with the bytes read ahead of it first."""

    def __init__(self, f: object, ahead: bytes) -> None:
        self.f, self.ahead = f, ahead

    def read(self, n: int = -1) -> bytes:
        out, self.ahead = (self.ahead, b"") if n < 0 else (self.ahead[:n], self.ahead[n:])
        more = -1 if n < 0 else n - len(out)
        return out + (self.f.read(more) if more else b"")  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.f, name)


def _bad_records(records: bytes) -> str:
    """What in pax records (`<length> <key>=<value>\\n`, one after another) is no record, or ""."""
    if re.search(rb"[0-9]{33}", records):
        return "a run of more than 32 digits"
    pos = 0
    while pos < len(records):
        space = records.find(b" ", pos, pos + 21)
        length = int(records[pos:space]) if space > pos and records[pos:space].isdigit() else 0
        end = pos + length
        if end <= space or end > len(records) or records[end - 1] != 10:
            return "a record whose length is not its own"
        if b"=" not in records[space:end]:
            return "a record with no ="
        pos = end
    return ""


def tar_entries(path: Path) -> list[Entry]:
    """The regular files of a tar (gzip'd or not) but hidden ones, each checked; links and
    devices refused."""
    try:
        tf = tarfile.open(path, "r:*", tarinfo=_Header)  # noqa: SIM115 - kept open for readers
        members = _checked(path.name, ((m.name, m.size, _tar_kind(m), m) for m in tf))
        entries = [
            (m.name, partial(_read, tf.extractfile, m, m.size)) for m in members if m.isfile()
        ]
        left = MAX_BYTES  # read on to the end, capped, so the compression's check (a CRC) runs
        while chunk := tf.fileobj.read(1 << 20):  # type: ignore[union-attr]
            if (left := left - len(chunk)) < 0:
                raise UserError(f"{path.name}: more than {MAX_BYTES:,} bytes after its last member")
        return entries
    except (_Refused, tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error) as e:
        raise UserError(f"{path.name}: cannot read the archive: {e}") from e
    except RecursionError:  # tarfile reads a run of extended headers by recursion
        raise UserError(
            f"{path.name}: cannot read the archive: too many headers in a row"
        ) from None


def zip_entries(zf: zipfile.ZipFile, where: str) -> list[Entry]:
    """The files of a zip but hidden ones, every name, size and method checked first: stored, as
    the download stage writes them, or deflated, as `zip -r` does (reading one checks its CRC)."""
    methods = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
    odd = "compressed by another method than deflate"  # bzip2 and lzma inflate a member whole
    members = (
        (i.filename, i.file_size, None if i.compress_type in methods else odd, i)
        for i in zf.infolist()
    )
    return [
        (i.filename, partial(_read, zf.open, i, i.file_size))
        for i in _checked(where, members)
        if not i.is_dir()
    ]


def _read(open_member: Callable[[M], IO[bytes] | None], member: M, size: int) -> bytes:
    """A member's declared bytes and no more: `ZipFile.read` inflates up to 2 GiB before cutting."""
    with open_member(member) as f:  # type: ignore[union-attr]  # a regular file: never None
        return f.read(size)


TOO_DEEP = "folders nested too deep to walk (about 1,000 levels)"
LINKED_FOLDER = "a link to a folder, which is not followed: allowed: the folder itself"


def hidden(name: str) -> bool:
    """A name a folder listing hides (`.git`, Finder's `.DS_Store`), or one under such a folder
    (`..` is no hidden name: a path out of the folder is refused)."""
    return any(part.startswith(".") and part not in (".", "..") for part in name.split("/"))


def visible_files(folder: Path, onerror: Callable | None = None) -> Iterator[Path]:
    """The files under `folder`, top down, and links to folders (not entered), but hidden ones
    (a `.git`); `onerror` as os.walk's."""
    try:
        for root, dirs, files in os.walk(folder, onerror=onerror):
            dirs[:] = [d for d in dirs if not hidden(d)]
            links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
            yield from (Path(root, f) for f in files + links if not hidden(f))
    except RecursionError:  # os.walk recurses once per level
        raise UserError(f"{folder}: {TOO_DEEP}") from None


def folder_entries(folder: Path) -> list[Entry]:
    """The files under a user's folder under an archive's caps (a home folder is one line)."""

    def walk() -> Iterator[tuple[str, int, str | None, Entry]]:
        for p in visible_files(folder):
            name = p.relative_to(folder).as_posix()
            st = p.stat() if p.exists() else None  # a dangling link: read fails later
            # a fifo would block the read for ever, a link to /dev/zero never end it
            odd = "device or fifo" if st and not stat.S_ISREG(st.st_mode) else None
            if st and stat.S_ISDIR(st.st_mode):
                odd = LINKED_FOLDER
            yield name, st.st_size if st else 0, odd, (name, p.read_bytes)

    return list(_checked(str(folder), walk()))
