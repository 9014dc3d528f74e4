"""A user's fast.ai-layout folder: every problem in one error, only the asked digits copied."""

from __future__ import annotations

import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from http_fixtures import digest_zip
from PIL import Image

from mnist_basics import rawzip
from mnist_basics.download import download
from mnist_basics.errors import UserError
from mnist_basics.layout import MAX_LISTED


@pytest.fixture
def tree(tmp_path: Path, synthetic_three: Path) -> Path:
    """A writable copy of the synthetic 1/4/8 tree under one top folder."""
    root = tmp_path / "mine" / "my_mnist"
    shutil.copytree(synthetic_three, root)
    return root


def test_copies_only_the_requested_digits(tmp_path: Path, tree: Path) -> None:
    out = tmp_path / "raw.zip"
    assert download([4, 1], [str(tree.parent)], 1, out) == str(tree.parent)
    _, counts = digest_zip(out, "mnist_14")
    assert counts == {"train/1": 40, "train/4": 40, "valid/1": 12, "valid/4": 12}


def test_every_problem_is_reported_at_once(tmp_path: Path, tree: Path) -> None:
    shutil.rmtree(tree / "valid")
    (tree / "train/x").mkdir()
    (tree / "train/x/1.png").write_text("hi")
    (tree / "train/x/2.png").write_text("hi")
    (tree / "train/notes.txt").write_text("hi")
    (tree / "train/1/readme.md").write_text("hi")
    shutil.copy(tree / "train/1/0.png", tree / "train/1/007.png")
    shutil.copy(tree / "train/1/0.png", tree / "train/1/abc.png")
    shutil.copy(tree / "train/1/0.png", tree / "train/1/99999999999999999999.png")  # > int64
    Image.new("L", (30, 28)).save(tree / "train/4/100001.png")
    Image.new("RGB", (28, 28)).save(tree / "train/4/100002.png")
    (tree / "train/4/100003.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    for f in (tree / "train/8").iterdir():
        f.unlink()
    with pytest.raises(UserError) as e:
        download([1, 4, 8], [str(tree)], 1, tmp_path / "raw.zip")
    msg = str(e.value)
    for expected in (
        "11 problem(s) in fast.ai's layout",
        "valid: missing (no images)",
        "train/x: not a digit folder (0-9)",
        "train/notes.txt: a stray file",
        "train/1/readme.md: not an <index>.png file",
        "train/1/007.png: not an <index>.png file",
        "train/1/abc.png: not an <index>.png file",
        "train/1/99999999999999999999.png: not an <index>.png file (an index of at most 18",
        "train/8: no images",
        "train/4/100001.png: PNG 30x28 mode L, not 28x28 mode L",
        "train/4/100002.png: PNG 28x28 mode RGB",
        "train/4/100003.png: does not decode",
    ):
        assert expected in msg, expected
    assert not (tmp_path / "raw.zip").exists()


def test_two_names_of_one_split_are_refused_not_merged(tmp_path: Path, tree: Path) -> None:
    """A held-out testing/ beside valid/ (fast.ai's mnist_png names the valid split testing/):
    read as one split, the user's test images became validation images without a word."""
    shutil.copytree(tree / "valid", tree / "testing")
    for f in (tree / "testing").rglob("*.png"):
        f.rename(f.with_name(f"{int(f.stem) + 100000}.png"))  # other images, no index twice
    with pytest.raises(UserError, match=r"valid/ and testing/ both name the valid split") as e:
        download([1, 4, 8], [str(tree)], 1, tmp_path / "raw.zip")
    assert "allowed: one of them" in str(e.value)
    assert not (tmp_path / "raw.zip").exists()


def test_a_missing_digit_and_the_listing_limit(tmp_path: Path, tree: Path) -> None:
    for i in range(MAX_LISTED + 5):
        (tree / "valid/8" / f"junk{i}.txt").write_text("x")
    with pytest.raises(UserError) as e:
        download([1, 2, 8], [str(tree)], 1, tmp_path / "raw.zip")
    msg = str(e.value)
    assert "train/2: no images" in msg and "valid/2: no images" in msg
    assert f"{MAX_LISTED + 7} problem(s)" in msg and "... and 7 more" in msg
    assert len(msg.splitlines()) == 1 + 1 + MAX_LISTED + 1  # head, source, listed, more


def test_a_folder_in_no_known_layout(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(UserError, match=r"not in fast\.ai's layout"):
        download([3, 7], [str(tmp_path)], 1, tmp_path / "out/raw.zip")


def test_pixels_are_copied_exactly(tmp_path: Path, tree: Path) -> None:
    img = np.arange(784, dtype=np.uint32).reshape(28, 28).astype(np.uint8)
    Image.fromarray(img, mode="L").save(tree / "valid/8/99999.png")
    download([1, 8], [str(tree)], 1, tmp_path / "raw.zip")
    with (
        zipfile.ZipFile(tmp_path / "raw.zip") as zf,
        Image.open(zf.open("mnist_18/valid/8/99999.png")) as im,
    ):
        assert np.array_equal(np.asarray(im), img)


def test_the_same_image_twice_and_digits_that_are_not_ascii(tmp_path: Path, tree: Path) -> None:
    (tree / "training/1").mkdir(parents=True)  # fast.ai's other name for train/
    shutil.copy(tree / "train/1/0.png", tree / "training/1/0.png")
    (tree / "valid/\u0661").mkdir()  # Arabic-Indic one: str.isdigit says yes, int() reads 1
    shutil.copy(tree / "valid/1/0.png", tree / "valid/\u0661/9.png")
    shutil.copy(tree / "valid/1/0.png", tree / "valid/1/\u00b3.png")  # '³': int() cannot read it
    with pytest.raises(UserError) as e:
        download([1, 4, 8], [str(tree)], 1, tmp_path / "raw.zip")
    msg = str(e.value)
    assert "4 problem(s) in fast.ai's layout" in msg
    assert "train: the same <digit>/<index>.png twice" in msg
    assert "train/ and training/ both name the train split" in msg
    assert "valid/\u0661: not a digit folder (0-9)" in msg
    assert "valid/1/\u00b3.png: not an <index>.png file" in msg


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_pngs_profiles_and_text_are_never_inflated(tmp_path: Path, tree: Path) -> None:
    """Pillow inflates every iCCP chunk (up to 1 MB each: 50 PNGs of 990 in a 188 KB .tgz cost
    112 s of CPU) and compressed text as it opens a PNG. Read from its pixel chunks alone, one
    whose profile or text inflates past Pillow's cap (which it refuses) is the same image."""
    png = (tree / "train/1/0.png").read_bytes()
    too_big = zlib.compress(b"\0" * (2 << 20), 9)
    extra = chunk(b"iCCP", b"p\0\0" + too_big) + chunk(b"zTXt", b"k\0\0" + too_big)
    head, pixels, end = png[:33], png[33:-12], png[-12:]  # IHDR, IDAT, IEND
    (tree / "train/1/900.png").write_bytes(head + extra * 40 + pixels + extra + end)
    download([1, 4, 8], [str(tree)], 1, tmp_path / "raw.zip")
    _, splits = rawzip.read(tmp_path / "raw.zip")
    train = splits["train"]
    image = {int(i): im for i, im in zip(train.indices, train.images, strict=True)}
    assert np.array_equal(image[900], image[0])


def grey_png(image: np.ndarray, depth: int = 8, interlaced: bool = False, rows: int = 28) -> bytes:
    """A 28x28 greyscale PNG written by hand (Pillow writes neither Adam7 nor 4-bit grey), of
    only its first `rows` rows of pixel data."""
    from mnist_basics.layout import ADAM7

    samples = image >> (8 - depth)
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    data = b""
    for x, y, dx, dy in passes:
        for row in samples[y::dy, x::dx]:
            bits = np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - depth :]
            data += b"\0" + np.packbits(bits.reshape(-1)).tobytes()
    data = data[: rows * 29] if not interlaced else data
    ihdr = struct.pack(">IIBBBBB", 28, 28, depth, 0, 0, 0, int(interlaced))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )


def test_a_png_whose_pixel_data_ends_early_is_refused(tmp_path: Path, tree: Path) -> None:
    """A complete zlib stream of 1 of 28 rows: Pillow read the 27 others as 0, MNIST's
    background, and the damaged digit went into training. Adam7 and 4-bit grey still read."""
    from mnist_basics.layout import decode_png

    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    for depth, interlaced in ((8, False), (8, True), (4, False), (4, True), (2, True)):
        got = decode_png(grey_png(image, depth, interlaced))
        assert isinstance(got, np.ndarray), (depth, interlaced, got)
        scale = 255 // (2**depth - 1)  # Pillow's grey levels of a depth below 8
        assert np.array_equal(got, (image >> (8 - depth)) * scale), (depth, interlaced)
    (tree / "train/1/900.png").write_bytes(grey_png(image, rows=1))
    with pytest.raises(UserError, match=r"train/1/900\.png: its pixel data ends early \(29 of 812"):
        download([1, 4, 8], [str(tree)], 1, tmp_path / "raw.zip")
    png = grey_png(image, rows=5)  # a first IHDR of depth 1 asks 140 bytes; Pillow reads the last
    one_bit = chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 1, 0, 0, 0, 0))
    assert decode_png(png[:8] + one_bit + png[8:]) == (
        "a PNG of more than one IHDR chunk (its header): allowed: one"
    )


def test_a_png_of_many_chunks_is_refused_unopened(tmp_path: Path, tree: Path) -> None:
    """Pillow reads each chunk in Python: 100 members of 1 MB of empty IDATs took 12 s."""
    png = (tree / "train/1/0.png").read_bytes()
    (tree / "train/1/900.png").write_bytes(png[:33] + chunk(b"IDAT", b"") * 101 + png[33:])
    with pytest.raises(UserError) as e:
        download([1, 4, 8], [str(tree)], 1, tmp_path / "raw.zip")
    assert "train/1/900.png: a PNG of 104 chunks: allowed: up to 100 (28x28 has a few)" in str(
        e.value
    )


def test_pixel_data_in_many_chunks_is_refused_unopened(tmp_path: Path, tree: Path) -> None:
    """A raw.zip of 84,000 PNGs of 98 IDATs each took 17 s to read (all of MNIST: 4.7 s): each
    IDAT is read by Pillow in Python. Eight are allowed, split as an encoder may."""
    png = (tree / "train/1/0.png").read_bytes()
    head, pixels, end = png[:33], png[33:-12], png[-12:]  # IHDR, IDAT, IEND
    data = zlib.decompress(pixels[8:-4])
    stream = zlib.compress(data)
    parts = [
        stream[i : i + -(-len(stream) // 8)] for i in range(0, len(stream), -(-len(stream) // 8))
    ]
    (tree / "train/1/900.png").write_bytes(head + b"".join(chunk(b"IDAT", p) for p in parts) + end)
    (tree / "train/1/901.png").write_bytes(head + chunk(b"IDAT", b"") * 8 + pixels + end)
    with pytest.raises(UserError) as e:
        download([1, 4, 8], [str(tree)], 1, tmp_path / "raw.zip")
    assert "1 problem(s)" in str(e.value), str(e.value)
    assert "train/1/901.png: its pixel data in 9 IDAT chunks: allowed: up to 8" in str(e.value)
