"""Archive safety: every unsafe member is refused by name, and nothing lands outside the target."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from http_fixtures import member, tar_with

from mnist_basics.download.archive import extract_tar
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
    target = tmp_path / "out"
    with pytest.raises(UserError, match=why) as e:
        extract_tar(tgz, target)
    assert repr(members[-1].name) in str(e.value)
    outside = {p.name for p in tmp_path.rglob("*")} - {"a.tgz", "out", "a.txt"}
    assert outside == set()
    assert not Path("/tmp/evil-abs.txt").exists()


def test_regular_files_and_folders_extract(tmp_path: Path) -> None:
    folder = member("top/train", tarfile.DIRTYPE)
    tgz = _write(tmp_path, tar_with([folder, member("top/train/3/1.png")], data=b"png"))
    extract_tar(tgz, tmp_path / "out")
    assert (tmp_path / "out/top/train/3/1.png").read_bytes() == b"png"


def test_member_count_limit(tmp_path: Path) -> None:
    tgz = _write(tmp_path, tar_with([member(f"{i}.txt") for i in range(6)]))
    with pytest.raises(UserError, match=r"more than 5 members"):
        extract_tar(tgz, tmp_path / "out", max_members=5)


def test_total_size_limit(tmp_path: Path) -> None:
    tgz = _write(tmp_path, tar_with([member("a"), member("b")], data=b"x" * 600))
    with pytest.raises(UserError, match=r"refused member 'b': archive unpacks to more than 1000"):
        extract_tar(tgz, tmp_path / "out", max_bytes=1000)


def test_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot extract"):
        extract_tar(_write(tmp_path, b"not a tar at all" * 100), tmp_path / "out")
