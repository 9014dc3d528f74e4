"""tensorize: canonical order, exact pixels, and every bad file named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from mnist_basics.errors import UserError
from mnist_basics.tensorize import tensorize


def _copy(src: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(src, raw / "mnist_sample")
    return raw


def test_stacks_in_canonical_order_with_exact_pixels(synthetic_37: Path, tmp_path: Path) -> None:
    raw = _copy(synthetic_37, tmp_path)
    tensorize(raw, tmp_path / "tensors")
    t = load_file(tmp_path / "tensors" / "train.safetensors")
    assert t["images"].dtype == np.uint8 and t["images"].shape == (80, 28, 28)
    assert t["labels"].tolist() == [3] * 40 + [7] * 40
    idx3 = t["indices"][:40].tolist()
    assert idx3 == sorted(idx3)  # numeric, so 10 after 8, not after 1
    for k in (0, 17, 79):
        d, i = t["labels"][k], t["indices"][k]
        png = np.asarray(Image.open(raw / "mnist_sample" / "train" / str(d) / f"{i}.png"))
        assert np.array_equal(t["images"][k], png)


def test_output_is_byte_identical_across_runs(synthetic_37: Path, tmp_path: Path) -> None:
    raw = _copy(synthetic_37, tmp_path)
    tensorize(raw, tmp_path / "a")
    tensorize(raw, tmp_path / "b")
    for s in ("train", "valid"):
        assert (tmp_path / "a" / f"{s}.safetensors").read_bytes() == (
            tmp_path / "b" / f"{s}.safetensors"
        ).read_bytes()


def test_every_bad_file_is_named_and_nothing_is_written(synthetic_37: Path, tmp_path: Path) -> None:
    raw = _copy(synthetic_37, tmp_path)
    ds = raw / "mnist_sample"
    (ds / "train" / "3" / "0.png").write_bytes(b"not a png")
    Image.new("RGB", (28, 28)).save(ds / "train" / "7" / "1.png")
    Image.new("L", (32, 32)).save(ds / "valid" / "3" / "0.png")
    (ds / "valid" / "7" / "notes.txt").write_text("stray")
    with pytest.raises(UserError) as e:
        tensorize(raw, tmp_path / "tensors")
    msg = str(e.value)
    assert "notes.txt" in msg
    assert not (tmp_path / "tensors").exists()
    shutil.rmtree(raw)
    raw = _copy(synthetic_37, tmp_path)
    ds = raw / "mnist_sample"
    (ds / "train" / "3" / "0.png").write_bytes(b"not a png")
    Image.new("RGB", (28, 28)).save(ds / "train" / "7" / "1.png")
    Image.new("L", (32, 32)).save(ds / "valid" / "3" / "0.png")
    with pytest.raises(UserError) as e:
        tensorize(raw, tmp_path / "tensors")
    msg = str(e.value)
    assert "train/3/0.png: not a readable PNG" in msg
    assert "train/7/1.png: 28x28 mode RGB" in msg
    assert "valid/3/0.png: 32x32 mode L" in msg
    assert not (tmp_path / "tensors").exists()
    assert not list(tmp_path.glob(".tensors*"))


def test_layout_problems_are_named(synthetic_37: Path, tmp_path: Path) -> None:
    raw = _copy(synthetic_37, tmp_path)
    ds = raw / "mnist_sample"
    (ds / "train" / "x").mkdir()
    shutil.rmtree(ds / "valid" / "7")
    (ds / "valid" / "7").mkdir()
    with pytest.raises(UserError) as e:
        tensorize(raw, tmp_path / "tensors")
    assert "train/x: not a digit folder" in str(e.value)
    assert "valid/7: no images" in str(e.value)
    shutil.rmtree(ds / "valid")
    (ds / "train" / "x").rmdir()
    with pytest.raises(UserError, match="valid: split folder missing"):
        tensorize(raw, tmp_path / "tensors")
