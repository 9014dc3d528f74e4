"""Archive safety: every unsafe member is refused by name, and nothing is ever written to disk."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from http_fixtures import member, tar_with

from mnist_basics import archives
from mnist_basics.errors import UserError

UNSAFE = {
    "dotdot": ([member("ok/../../evil.txt")], "path leaves"),
    "absolute": ([member("/tmp/evil-abs.txt")], "absolute"),
    "symlink": ([member("link", tarfile.SYMTYPE, "/etc/passwd")], "symlink"),
    "hardlink": ([member("a.txt"), member("hard", tarfile.LNKTYPE, "a.txt")], "hard link"),
    "device": ([member("dev", tarfile.CHRTYPE)], "device"),
    "fifo": ([member("pipe", tarfile.FIFOTYPE)], "fifo"),
}


def _write(tmp_path: Path, data: bytes) -> Path:
    tgz = tmp_path / "a.tgz"
    tgz.write_bytes(data)
    return tgz


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_member_is_refused_by_name(tmp_path: Path, case: str) -> None:
    members, why = UNSAFE[case]
    tgz = _write(tmp_path, tar_with(members))
    with pytest.raises(UserError, match=why) as e:
        archives.tar_entries(tgz)
    assert repr(members[-1].name) in str(e.value)
    assert {p.name for p in tmp_path.rglob("*")} == {"a.tgz"}
    assert not Path("/tmp/evil-abs.txt").exists()


def test_regular_files_are_read_and_folders_skipped(tmp_path: Path) -> None:
    folder = member("top/train", tarfile.DIRTYPE)
    tgz = _write(tmp_path, tar_with([folder, member("top/train/3/1.png")], data=b"png"))
    entries = archives.tar_entries(tgz)
    assert [(name, read()) for name, read in entries] == [("top/train/3/1.png", b"png")]
    assert {p.name for p in tmp_path.rglob("*")} == {"a.tgz"}


def test_member_count_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_MEMBERS", 5)
    tgz = _write(tmp_path, tar_with([member(f"{i}.txt") for i in range(6)]))
    with pytest.raises(UserError, match=r"more than 5 members"):
        archives.tar_entries(tgz)


def test_total_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archives, "MAX_BYTES", 1000)
    tgz = _write(tmp_path, tar_with([member("a"), member("b")], data=b"x" * 600))
    with pytest.raises(UserError, match=r"refused member 'b': larger than expected"):
        archives.tar_entries(tgz)


def test_member_size_limit(tmp_path: Path) -> None:
    tgz = _write(
        tmp_path, tar_with([member("big.png")], data=b"x" * (archives.MAX_MEMBER_BYTES + 1))
    )
    with pytest.raises(UserError, match=r"refused member 'big.png': larger than expected"):
        archives.tar_entries(tgz)


def test_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot read the archive"):
        archives.tar_entries(_write(tmp_path, b"not a tar at all" * 100))


def test_a_folder_is_held_to_the_same_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's folder (one picked by mistake) is capped as an archive is, before a file is read."""
    folder = tmp_path / "home"
    for i in range(6):
        (folder / "train" / "3").mkdir(parents=True, exist_ok=True)
        (folder / "train" / "3" / f"{i}.png").write_bytes(b"png")
    (folder / ".hidden").write_bytes(b"x" * (archives.MAX_MEMBER_BYTES + 1))
    assert len(archives.folder_entries(folder)) == 6  # hidden files are not counted
    (folder / "video.mp4").write_bytes(b"x" * (archives.MAX_MEMBER_BYTES + 1))
    with pytest.raises(UserError, match=r"refused member 'video.mp4': larger than expected"):
        archives.folder_entries(folder)
    (folder / "video.mp4").unlink()
    monkeypatch.setattr(archives, "MAX_MEMBERS", 5)
    with pytest.raises(UserError, match=r"more than 5 members"):
        archives.folder_entries(folder)


def test_a_damaged_member_header_is_an_error_not_a_short_read(tmp_path: Path) -> None:
    """tarfile alone ends the member list at a header it cannot parse, with no error: a corrupt
    archive would lose its last images silently. The stored CRC is the intact archive's, as
    when the bytes were damaged after the archive was made."""
    intact = gzip.decompress(tar_with([member(f"top/train/3/{i}.png") for i in range(5)]))
    damaged = bytearray(intact)
    damaged[3 * 1024 : 3 * 1024 + 512] = b"\xff" * 512  # member 3's header (each: 1 KiB)
    gz = bytearray(gzip.compress(bytes(damaged), mtime=0))
    gz[-8:-4] = zlib.crc32(intact).to_bytes(4, "little")
    with pytest.raises(UserError, match=r"a\.tgz: cannot read the archive: a damaged member"):
        archives.tar_entries(_write(tmp_path, bytes(gz)))


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_huge_extended_header_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    """A pax or long-name header of 128 KiB of zeros, a 226-byte .tgz: Python 3.11.7's tarfile
    reads it whole and parses a pax header in quadratic time (22 s for this one, hours for a
    few MB), before any member reaches the caps."""
    h = tarfile.TarInfo("././@PaxHeader")
    h.type, h.size = kind, 128 << 10
    raw = h.tobuf(format=tarfile.USTAR_FORMAT) + b"0" * h.size + bytes(1024)
    with pytest.raises(
        UserError, match=r"a\.tgz: cannot read the archive: an extended header of 131,072 bytes"
    ):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw, 9, mtime=0)))


def _pax(kind: bytes, records: bytes) -> bytes:
    h = tarfile.TarInfo("././@PaxHeader")
    h.type, h.size = kind, len(records)
    return h.tobuf(format=tarfile.USTAR_FORMAT) + records + bytes(-len(records) % 512)


def _records(**pairs: str) -> bytes:
    out = b""
    for key, value in pairs.items():
        body = f" {key}={value}\n".encode()
        n = len(body) + len(str(len(body)))
        out += f"{n + (len(str(n)) > len(str(len(body))))}".encode() + body
    return out


def test_a_commits_global_header_is_read_and_many_global_records_refused(tmp_path: Path) -> None:
    """`git archive` (GitHub's tarballs too) writes one global record, the commit id. tarfile
    copies the global records into every later member: 60 headers of them before 1,000 empty
    members, a 112 KB .tgz, cost 1.9 GB."""
    pngs = b"".join(member(f"top/train/3/{i}.png").tobuf() for i in range(3)) + bytes(1024)
    git = _pax(tarfile.XGLTYPE, _records(comment="a" * 40))
    assert len(archives.tar_entries(_write(tmp_path, gzip.compress(git + pngs, mtime=0)))) == 3
    many = _pax(tarfile.XGLTYPE, _records(**{f"k{i}": "x" for i in range(17)}))
    with pytest.raises(UserError, match=r"cannot read the archive: more pax global records"):
        archives.tar_entries(_write(tmp_path, gzip.compress(many + pngs, mtime=0)))


@pytest.mark.parametrize(
    ("records", "why"),
    [
        (b"0" * 8000, "a run of more than 32 digits"),
        (b"2 " * 4000 + b"=\n", "a record whose length is not its own"),
        (b"9 abcdef\n", "a record with no ="),
    ],
)
def test_pax_records_tarfile_would_parse_in_quadratic_time_are_refused(
    tmp_path: Path, records: bytes, why: str
) -> None:
    """Python 3.11.7's tarfile took 0.066 s on one such 8 KB header: 99,000 of them, a 1.5 MB
    .tgz, would have taken hours."""
    raw = (_pax(tarfile.XHDTYPE, records) + member("top/train/3/1.png").tobuf()) * 3
    with pytest.raises(UserError, match=f"cannot read the archive: a pax header with {why}"):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw + bytes(1024), mtime=0)))


def test_pax_records_together_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Well-formed, but 100,000 headers of 8 KB of records each would take minutes to parse."""
    monkeypatch.setattr(archives, "MAX_PAX_RECORDS", 1000)
    pax = _pax(tarfile.XHDTYPE, _records(**{f"k{i}": "x" for i in range(400)}))
    raw = b"".join(pax + member(f"top/train/3/{i}.png").tobuf() for i in range(3))
    with pytest.raises(UserError, match=r"cannot read the archive: more pax records than"):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw + bytes(1024), mtime=0)))


def test_bytes_after_a_pax_headers_records_are_refused(tmp_path: Path) -> None:
    """tarfile parses a header's whole last block, past its size: records hidden there would go
    unchecked (`2 2 2 ... =` made 99,000 headers of 6 bytes cost 39 s)."""
    h = tarfile.TarInfo("././@PaxHeader")
    h.type, h.size = tarfile.XHDTYPE, 6
    block = (b"6 x=y\n" + b"2 " * 200 + b"=").ljust(512, b"\0")
    raw = h.tobuf(format=tarfile.USTAR_FORMAT) + block + member("top/train/3/1.png").tobuf()
    with pytest.raises(UserError, match=r"a pax header with bytes after its records"):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw + bytes(1024), mtime=0)))


def test_extended_headers_together_are_capped_in_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An 8 KB name before each of 100,000 members: tarfile keeps every name (1.8 GB)."""
    monkeypatch.setattr(archives, "MAX_EXTENDED_BYTES", 20_000)
    pax = _pax(tarfile.XHDTYPE, _records(path="top/train/3/" + "d" * 7000 + ".png"))
    raw = b"".join(pax + member(f"top/train/3/{i}.png").tobuf() for i in range(3))
    with pytest.raises(UserError, match=r"more extended headers than a tar of PNGs needs"):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw + bytes(1024), mtime=0)))


def test_pax_headers_as_macos_writes_them_are_read(tmp_path: Path) -> None:
    """bsdtar's times and a quarantine xattr before every member: each header 400+ bytes."""
    times = {k: "1700000000.123456789" for k in ("mtime", "atime", "ctime")}
    xattr = {"SCHILY.xattr.com.apple.quarantine": "0083;65f1a2b3;Safari;" + "A1B2C3D4-" * 30}
    pax = _pax(tarfile.XHDTYPE, _records(**times, **xattr))
    raw = b"".join(pax + member(f"top/train/3/{i}.png").tobuf() for i in range(2000))
    entries = archives.tar_entries(_write(tmp_path, gzip.compress(raw + bytes(1024), mtime=0)))
    assert len(entries) == 2000


def test_a_run_of_extended_headers_is_one_line(tmp_path: Path) -> None:
    """tarfile reads headers in a row by recursion: 300 of them were a RecursionError."""
    raw = _pax(tarfile.XHDTYPE, b"6 a=b\n") * 300 + member("top/train/3/1.png").tobuf()
    with pytest.raises(UserError, match=r"cannot read the archive: too many headers in a row"):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw + bytes(1024), mtime=0)))


def _old_gnu_sparse(extension_blocks: int) -> bytes:
    """A type-S member whose map goes on for `extension_blocks` blocks of 512 bytes."""
    h = tarfile.TarInfo("top/train/3/1.png")
    h.type = tarfile.GNUTYPE_SPARSE
    head = bytearray(h.tobuf(format=tarfile.GNU_FORMAT))
    head[482] = 1  # "isextended": another block of the map follows
    head[148:156] = b"        "
    head[148:156] = b"%06o\0 " % sum(head[:512])
    more = bytearray(512)
    more[504] = 1
    return bytes(head) + bytes(more) * extension_blocks + bytes(512) + bytes(1024)


def _pax_sparse(numbers: int) -> bytes:
    """A member whose GNU sparse 1.0 map says it holds `numbers` numbers."""
    m = tarfile.TarInfo("top/train/3/1.png")
    m.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "1"}
    head = m.tobuf(format=tarfile.PAX_FORMAT) + b"%d\n" % numbers
    return head + b"1\n" * 2 * numbers + bytes(1024)


@pytest.mark.parametrize("raw", [_old_gnu_sparse(100_000), _pax_sparse(1_000_000)])
def test_a_sparse_member_is_refused_before_its_map_is_read(tmp_path: Path, raw: bytes) -> None:
    """tarfile reads a sparse map, however long, before the member (of size 0) meets any cap:
    a 200 KB .tgz took 78 s and 5 GB."""
    with pytest.raises(UserError, match=r"cannot read the archive: a sparse member"):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw, 9, mtime=0)))


def _negative_size_in_header() -> bytes:
    """A member header whose size field says -1024 in GNU's base-256 form."""
    head = bytearray(member("top/train/3/2.png").tobuf(format=tarfile.GNU_FORMAT))
    head[124:136] = b"\xff" * 10 + (-1024 & 0xFFFF).to_bytes(2, "big")
    head[148:156] = b"        "
    head[148:155] = b"%06o\0" % sum(head)
    return bytes(head)


@pytest.mark.parametrize("kind", ["pax", "header"])
def test_a_member_of_negative_size_is_refused(tmp_path: Path, kind: str) -> None:
    """A negative size sends tarfile back to an earlier header, which leads on to this one: a
    4 KB .tgz of 4 MiB of zeros and such a loop took 126 s, each lap decompressing it again."""
    # back to the second member's header, not to the first (at 0, where tarfile would stop)
    first = member("top/train/3/0.png").tobuf() + member("top/train/3/1.png").tobuf()
    if kind == "pax":  # the next member's size, -2 KiB
        loop = _pax(tarfile.XHDTYPE, _records(size="-2048")) + member("top/train/3/2.png").tobuf()
    else:  # -1 KiB
        loop = _negative_size_in_header()
    raw = first + loop + bytes(1024)
    with pytest.raises(UserError, match=r"cannot read the archive: a member of negative size"):
        archives.tar_entries(_write(tmp_path, gzip.compress(raw, mtime=0)))


def test_a_pax_header_of_a_usual_size_is_read(tmp_path: Path) -> None:
    """A long name, which tar writes as a pax header, still reads."""
    name = "top/train/3/" + "d" * 150 + "/1.png"
    assert [n for n, _ in archives.tar_entries(_write(tmp_path, tar_with([member(name)])))] == [
        name
    ]


def test_a_failed_crc_past_the_last_member_is_an_error(tmp_path: Path) -> None:
    gz = bytearray(tar_with([member("top/train/3/1.png")]))
    gz[-8] ^= 1  # the stored CRC
    with pytest.raises(UserError, match=r"cannot read the archive: CRC check failed"):
        archives.tar_entries(_write(tmp_path, bytes(gz)))


def test_a_corrupt_xz_tar_is_one_line(tmp_path: Path) -> None:
    """tarfile reads .tar.xz too, whose decoder raises lzma.LZMAError (not an OSError)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for i in range(50):
            info = tarfile.TarInfo(f"top/train/3/{i}.png")
            data = bytes(range(256)) * 4 + i.to_bytes(2, "big")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    xz = bytearray(buf.getvalue())
    xz[len(xz) // 2 : len(xz) // 2 + 64] = bytes(64)
    with pytest.raises(UserError, match=r"cannot read the archive: Corrupt input data"):
        archives.tar_entries(_write(tmp_path, bytes(xz)))


def test_a_folder_nested_too_deep_is_one_line(too_deep: Path) -> None:
    with pytest.raises(UserError, match=r"^\S+: folders nested too deep to walk"):
        archives.folder_entries(too_deep)


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_a_folders_fifo_or_device_is_refused_not_read(tmp_path: Path, kind: str) -> None:
    """Reading a fifo blocks for ever and /dev/zero never ends: neither is read."""
    folder = tmp_path / "mine"
    (folder / "train" / "3").mkdir(parents=True)
    (folder / "train" / "3" / "1.png").write_bytes(b"png")
    odd = folder / "train" / "3" / "2.png"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to("/dev/zero")
    with pytest.raises(UserError, match=r"refused member 'train/3/2.png': device or fifo"):
        archives.folder_entries(folder)


def test_a_link_to_a_folder_is_named_not_called_empty(tmp_path: Path) -> None:
    """os.walk does not enter a link to a folder: refused by name, not "no images" there."""
    folder = tmp_path / "mine"
    (folder / "train" / "3").mkdir(parents=True)
    (folder / "train" / "3" / "1.png").write_bytes(b"png")
    (tmp_path / "elsewhere").mkdir()
    (folder / "train" / "7").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"refused member 'train/7': a link to a folder, which"):
        archives.folder_entries(folder)


def test_hidden_members_are_skipped_in_archives_as_in_folders(tmp_path: Path) -> None:
    """`tar czf` of a folder Finder opened holds `.DS_Store` files; the folder itself is read
    without them, and so is its archive now."""
    names = ["top/.DS_Store", "top/train/3/.DS_Store", "top/.git/config", "top/train/3/1.png"]
    tgz = _write(tmp_path, tar_with([member(n) for n in names], data=b"png"))
    assert [name for name, _ in archives.tar_entries(tgz)] == ["top/train/3/1.png"]
    venv = member("top/.venv/bin/python", tarfile.SYMTYPE, "/usr/bin/python3")  # never read
    tgz = _write(tmp_path, tar_with([venv, member("top/train/3/1.png")], data=b"png"))
    assert [name for name, _ in archives.tar_entries(tgz)] == ["top/train/3/1.png"]
    with zipfile.ZipFile(tmp_path / "git.zip", "w") as zf:  # a pack past a member's cap
        zf.writestr("top/.git/objects/pack/a.pack", bytes(archives.MAX_MEMBER_BYTES + 1))
        zf.writestr("top/train/3/1.png", b"png")
    with zipfile.ZipFile(tmp_path / "git.zip") as zf:
        assert [name for name, _ in archives.zip_entries(zf, "git.zip")] == ["top/train/3/1.png"]
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        for n in names:
            zf.writestr(n, b"png")
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert [name for name, _ in archives.zip_entries(zf, "a.zip")] == ["top/train/3/1.png"]
    folder = tmp_path / "folder"
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        (folder / n).write_bytes(b"png")
    assert [name for name, _ in archives.folder_entries(folder)] == ["top/train/3/1.png"]


def _zip_bomb(method: int, compressed: bytes, declared: bytes) -> bytes:
    """One member whose headers say it is `declared` (its size and CRC) while its data,
    `compressed` by `method`, inflates to more."""
    name, crc = b"top/train/3/1.png", zlib.crc32(declared)
    sizes = (crc, len(compressed), len(declared), len(name), 0)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 46, 0, method, 0, 33, *sizes)
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 46, 46, 0, method, 0, 33, *sizes, 0, 0, 0, 0, 0
    )
    body = local + name + compressed
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), len(body), 0
    )
    return body + central + name + end


def test_a_zip_member_is_read_to_its_declared_size_and_no_further(tmp_path: Path) -> None:
    """zipfile's `read` inflates up to 2 GiB in one step before it cuts the data to the declared
    size: 256 MiB of zeros behind a PNG's 100 bytes cost 256 MiB."""
    png = b"\x89PNG" + bytes(96)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = z.compress(png) + z.compress(bytes(256 << 20)) + z.flush()
    path = _write(tmp_path, _zip_bomb(zipfile.ZIP_DEFLATED, deflated, png))
    tracemalloc.start()
    try:
        with zipfile.ZipFile(path) as zf:
            [(_, read)] = archives.zip_entries(zf, str(path))
            assert read() == png
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_zip_member_compressed_by_bzip2_or_lzma_is_refused(tmp_path: Path, method: int) -> None:
    """zipfile inflates such a member whole before it cuts it to size: a 5.6 KB zip took 8.2 GB."""
    with zipfile.ZipFile(tmp_path / "a.zip", "w", method) as zf:
        zf.writestr("top/train/3/1.png", b"\x89PNG" + bytes(96))
    with zipfile.ZipFile(tmp_path / "a.zip") as zf, pytest.raises(UserError) as e:
        archives.zip_entries(zf, "raw.zip")
    assert str(e.value) == (
        "raw.zip: refused member 'top/train/3/1.png': compressed by another method than deflate"
    )
