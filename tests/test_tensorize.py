"""tensorize: the PNGs of data/raw.zip in canonical order, exact pixels, every bad member named."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file
from synthetic import tree_members, write_zip

from mnist_basics.errors import UserError
from mnist_basics.layout import MAX_LISTED
from mnist_basics.tensorize import tensorize

# The real 3s and 7s as the tree-reading tensorize wrote them (e60a40a, the dvc.lock of the day):
# reading the zip must not change a byte.
REAL_37_MD5 = {
    "train.safetensors": "1e9dbc03df12a2d0990f16235043a463",
    "valid.safetensors": "536fa75e28f1099f501c1a0c4a8a98aa",
}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _tensors(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def members(synthetic_37: Path) -> dict[str, bytes | None]:
    """The synthetic 3s and 7s as data/raw.zip's members, for a test to break."""
    return dict(tree_members(synthetic_37))


def test_stacks_in_canonical_order_with_exact_pixels(
    members: dict[str, bytes | None], synthetic_37: Path, tmp_path: Path
) -> None:
    raw = write_zip(tmp_path / "raw.zip", dict(sorted(members.items(), reverse=True)))
    tensorize(raw, tmp_path / "tensors")
    t = load_file(tmp_path / "tensors" / "train.safetensors")
    assert t["images"].dtype == np.uint8 and t["images"].shape == (80, 28, 28)
    assert t["labels"].tolist() == [3] * 40 + [7] * 40
    idx3 = t["indices"][:40].tolist()
    assert idx3 == sorted(idx3)  # numeric, so 10 after 8, not after 1
    for k in (0, 17, 79):
        d, i = t["labels"][k], t["indices"][k]
        png = np.asarray(Image.open(synthetic_37 / "train" / str(d) / f"{i}.png"))
        assert np.array_equal(t["images"][k], png)


def test_output_is_byte_identical_across_runs_and_zip_writers(
    members: dict[str, bytes | None], tmp_path: Path
) -> None:
    """Ours (stored, canonical order) and `zip -r`'s kind (deflated, folder entries, any order)
    hold the same images, so they give the same bytes."""
    ours = write_zip(tmp_path / "ours.zip", dict(sorted(members.items())))
    names = list(reversed(members))  # 9s before 1s, valid before train
    theirs = {"mnist_sample/": None, "mnist_sample/train/": None}
    theirs |= {n: members[n] for n in names}
    other = write_zip(tmp_path / "other.zip", theirs, zipfile.ZIP_DEFLATED)
    tensorize(ours, tmp_path / "a")
    tensorize(ours, tmp_path / "b")
    tensorize(other, tmp_path / "c")
    assert _tensors(tmp_path / "a") == _tensors(tmp_path / "b") == _tensors(tmp_path / "c")


@pytest.mark.realdata
def test_real_tensors_are_the_bytes_the_png_tree_gave(real_37_tensors: Path) -> None:
    got = {
        p.name: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: S324
        for p in sorted(real_37_tensors.iterdir())
    }
    assert got == REAL_37_MD5


def test_every_bad_member_is_named_and_nothing_is_written(
    members: dict[str, bytes | None], tmp_path: Path
) -> None:
    members["mnist_sample/train/3/0.png"] = b"not a png"
    members["mnist_sample/train/7/1.png"] = _png(Image.new("RGB", (28, 28)))
    members["mnist_sample/valid/3/0.png"] = _png(Image.new("L", (32, 32)))
    members["mnist_sample/valid/7/notes.txt"] = b"stray"
    raw = write_zip(tmp_path / "raw.zip", members)
    with pytest.raises(UserError) as e:
        tensorize(raw, tmp_path / "tensors")
    msg = str(e.value)
    assert msg.startswith(f"{raw}: 4 problem(s) in fast.ai's layout")
    assert "mnist_sample/valid/7/notes.txt: not an <index>.png file" in msg
    assert "train/3/0.png: does not decode as PNG" in msg
    assert "train/7/1.png: PNG 28x28 mode RGB" in msg
    assert "valid/3/0.png: PNG 32x32 mode L" in msg
    assert not (tmp_path / "tensors").exists()
    assert not list(tmp_path.glob(".tensors*"))


def test_a_corrupt_member_is_named(members: dict[str, bytes | None], tmp_path: Path) -> None:
    raw = write_zip(tmp_path / "raw.zip", members)
    data = bytearray(raw.read_bytes())
    png = members["mnist_sample/train/3/0.png"]
    assert png is not None
    at = bytes(data).index(png) + 40
    data[at] ^= 0xFF  # one flipped byte inside the member's stored PNG
    raw.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"train/3/0\.png: cannot be read \(Bad CRC-32"):
        tensorize(raw, tmp_path / "tensors")


def test_layout_problems_are_named(members: dict[str, bytes | None], tmp_path: Path) -> None:
    members = {n: b for n, b in members.items() if not n.startswith("mnist_sample/valid/7/")}
    members["mnist_sample/valid/7/"] = None  # an empty digit folder
    members["mnist_sample/train/x/0.png"] = members["mnist_sample/train/3/0.png"]
    members["mnist_sample/train/x/2.png"] = members["mnist_sample/train/3/0.png"]
    members["mnist_sample/train/3/sub/4.png"] = members["mnist_sample/train/3/0.png"]
    members["mnist_sample/labels.csv"] = b"name,label\n"  # beside the splits: ignored
    with pytest.raises(UserError) as e:
        tensorize(write_zip(tmp_path / "raw.zip", members), tmp_path / "tensors")
    msg = str(e.value)
    assert "3 problem(s) in fast.ai's layout" in msg
    assert "mnist_sample/train/x: not a digit folder" in msg  # named once for its two files
    assert "mnist_sample/train/3/sub/4.png: not an <index>.png file" in msg
    assert "valid/7: no images" in msg
    members = {n: b for n, b in members.items() if "/valid/" not in n and "/x/" not in n}
    members = {n: b for n, b in members.items() if "/sub/" not in n}
    with pytest.raises(UserError, match="valid: missing"):
        tensorize(write_zip(tmp_path / "raw2.zip", members), tmp_path / "tensors")


def test_the_listing_stops_at_max_listed(members: dict[str, bytes | None], tmp_path: Path) -> None:
    for i in range(MAX_LISTED + 5):
        members[f"mnist_sample/train/3/junk{i}.txt"] = b"x"
    with pytest.raises(UserError) as e:
        tensorize(write_zip(tmp_path / "raw.zip", members), tmp_path / "tensors")
    lines = str(e.value).splitlines()
    assert len(lines) == 1 + MAX_LISTED + 1 and lines[-1].strip() == "... and 5 more"


def test_one_dataset_folder(members: dict[str, bytes | None], tmp_path: Path) -> None:
    members["mnist_18/train/1/0.png"] = members["mnist_sample/train/3/0.png"]
    raw = write_zip(tmp_path / "raw.zip", members)
    with pytest.raises(UserError, match=r"expected one dataset folder.* \['mnist_18', 'mnist_s"):
        tensorize(raw, tmp_path / "tensors")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip at all", b"PK\x03\x04 truncated", "truncated"],
    ids=["empty", "text", "header", "truncated"],
)
def test_a_broken_zip_is_one_clear_line(
    content: bytes | str, members: dict[str, bytes | None], tmp_path: Path
) -> None:
    raw = tmp_path / "data/raw.zip"
    if content == "truncated":  # a real zip, cut short: its central directory is gone
        whole = write_zip(tmp_path / "whole.zip", members).read_bytes()
        raw.parent.mkdir()
        raw.write_bytes(whole[: len(whole) // 2])
    else:
        raw.parent.mkdir()
        raw.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(UserError) as e:
        tensorize(raw, tmp_path / "tensors")
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"{raw}: not a readable zip") and "expected the download stage's" in msg
    assert not (tmp_path / "tensors").exists()


def test_a_missing_zip_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"raw\.zip: missing; expected the download stage's zip"):
        tensorize(tmp_path / "raw.zip", tmp_path / "tensors")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("mnist_sample/../../evil.png", "path leaves the folder"),
        ("/tmp/evil.png", "absolute path"),
        ("C:/evil.png", "absolute path"),
        ("mnist_sample\\train\\3\\1.png", "path leaves the folder"),
    ],
)
def test_unsafe_member_names_are_refused(
    name: str, why: str, members: dict[str, bytes | None], tmp_path: Path
) -> None:
    members[name] = b"x"
    raw = write_zip(tmp_path / "raw.zip", members)
    with pytest.raises(UserError, match=re.escape(f"refused member {name!r}: {why}")):
        tensorize(raw, tmp_path / "tensors")
    assert not (tmp_path / "tensors").exists()


def test_a_tensors_file_with_a_huge_header_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """A real split beside 100,000 empty tensors: each is built before the names are checked
    (a million cost 20 s and 1.8 GB)."""
    from safetensors.numpy import save_file

    from mnist_basics.tensors import read_split

    arrays = {"images": np.zeros((2, 28, 28), np.uint8), "labels": np.array([3, 7])}
    arrays |= {f"x{i}": np.zeros(0, np.uint8) for i in range(100_000)}
    save_file(arrays, tmp_path / "valid.safetensors")
    with pytest.raises(UserError, match=r"not a tensors file .*\(a header of [\d,]+ bytes, more"):
        read_split(tmp_path / "valid.safetensors", "np")


def test_a_zip_larger_than_all_of_mnist_is_refused_before_it_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zipfile builds an entry for every name in a zip's directory before any cap: 2 million
    entries, a 109 MB zip, cost 1.05 GB and 14 s."""
    from mnist_basics import rawzip

    raw = tmp_path / "raw.zip"
    with zipfile.ZipFile(raw, "w") as zf:
        for i in range(2000):
            zf.writestr(f"mnist_sample/train/3/{i}.png", b"")
    monkeypatch.setattr(rawzip, "MAX_BYTES", raw.stat().st_size - 1, raising=False)
    with pytest.raises(UserError, match=r"raw\.zip: [\d,]+ bytes, more than [\d,]+; expected the"):
        tensorize(raw, tmp_path / "tensors")
    assert not (tmp_path / "tensors").exists()


def test_a_zip_directory_past_the_cap_is_refused_before_zipfile_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zipfile reads and parses a zip's whole directory before a member can be counted: 2.5
    million one-byte names in a zip under the size cap cost 13.5 s and 949 MB."""
    from mnist_basics import rawzip

    raw = tmp_path / "raw.zip"
    with zipfile.ZipFile(raw, "w") as zf:
        for i in range(100):
            zf.writestr(f"mnist_sample/train/3/{i}.png", b"")
    monkeypatch.setattr(rawzip, "MAX_DIRECTORY", 1000)

    def unread(*args: object) -> None:
        raise AssertionError("zipfile read the directory")

    monkeypatch.setattr(zipfile, "ZipFile", unread)
    with pytest.raises(
        UserError, match=r"raw\.zip: a zip directory of [\d,]+ bytes, more than 1,000"
    ):
        tensorize(raw, tmp_path / "tensors")


def test_the_directory_size_is_read_as_zipfile_reads_it_zip64_too(tmp_path: Path) -> None:
    """Past 65,535 members (all ten digits: 70,000) zipfile writes zip64 end records, whose
    directory size is the one it reads."""
    from mnist_basics import rawzip

    for n in (3, 65_536):
        raw = tmp_path / f"{n}.zip"
        with zipfile.ZipFile(raw, "w") as zf:
            for i in range(n):
                zf.writestr(f"m/{i}", b"")
        with zipfile.ZipFile(raw) as zf:
            listed = sum(
                46 + len(i.filename) + len(i.extra) + len(i.comment) for i in zf.infolist()
            )
        assert rawzip.directory_bytes(raw, raw.stat().st_size) == listed, n
    data = raw.read_bytes()
    (tmp_path / "commented.zip").write_bytes(data[:-2] + b"\x01\x00x")  # a zip comment
    assert rawzip.directory_bytes(tmp_path / "commented.zip", len(data) + 1) == -1
