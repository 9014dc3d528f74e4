"""Pixel similarity: distances, the nearest-ideal rule, and the book's figures on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_basics import images
from mnist_basics.baseline import (
    accuracies,
    ideal_digits,
    mnist_distance,
    nearest_ideal,
    rmse_distance,
    run_baseline,
)
from mnist_basics.data import load_split
from mnist_basics.download import download
from mnist_basics.tensorize import tensorize


def test_distances_broadcast_like_the_book() -> None:
    a = torch.zeros(3, 28, 28)
    b = torch.full((28, 28), 0.5)
    assert mnist_distance(a, b).tolist() == [0.5, 0.5, 0.5]
    assert rmse_distance(a, b).tolist() == [0.5, 0.5, 0.5]


def test_nearest_ideal_two_digits_is_the_books_is_3_rule() -> None:
    ideals = torch.stack([torch.zeros(28, 28), torch.ones(28, 28)])
    x = torch.stack([torch.full((28, 28), v) for v in (0.1, 0.9, 0.5)])
    # 0.5 is a tie: the book's `d3 < d7` calls it a 7 (index 1).
    assert nearest_ideal(x, ideals, mnist_distance).tolist() == [0, 1, 1]


def test_nearest_ideal_many_digits() -> None:
    ideals = torch.stack([torch.full((28, 28), v) for v in (0.0, 0.5, 1.0)])
    x = torch.stack([torch.full((28, 28), v) for v in (0.9, 0.4, 0.05)])
    assert nearest_ideal(x, ideals, rmse_distance).tolist() == [2, 1, 0]


def test_the_mean_digit_accuracy_is_of_the_exact_accuracies() -> None:
    """3s: none of 3 right; 7s: 1 of 3. The mean is 1/6, 0.1667; the mean of the rounded
    per-digit figures, 0.16665, rounds to 0.1666."""
    labels = torch.tensor([3, 3, 3, 7, 7, 7])
    pred = torch.tensor([1, 1, 1, 1, 0, 0])  # indices into digits
    got = accuracies(pred, labels, [3, 7])
    assert got == {
        "accuracy": 0.1667,
        "mean_digit_accuracy": 0.1667,
        "per_digit": {"3": 0.0, "7": 0.3333},
    }


def test_the_ideal_digits_are_one_picture(synthetic_three: Path, tmp_path: Path) -> None:
    """One file whatever the digits (none left over when the digits change), each ideal digit's
    picture in it, left to right in the order of the digits."""
    download([1, 4, 8], [str(synthetic_three)], 10, tmp_path / "raw.zip")
    tensorize(tmp_path / "raw.zip", tmp_path / "tensors")
    plots = tmp_path / "plots"
    run_baseline(tmp_path / "tensors", tmp_path / "baseline.json", plots / "ideal_digits.png")
    assert [p.name for p in plots.iterdir()] == ["ideal_digits.png"]
    sheet = Image.open(plots / "ideal_digits.png").convert("RGB")
    ideals = ideal_digits(load_split(tmp_path / "tensors" / "train.safetensors"), [1, 4, 8])
    tiles = [images.grey(i.numpy()).convert("RGB") for i in ideals]
    w, h = tiles[0].size
    assert sheet.height < 2 * h < sheet.width  # one row
    for k, tile in enumerate(tiles):  # labelled_grid: 8 px margins, a 16 px caption above
        x, y = 8 + k * (w + 8), 8 + 16
        assert sheet.crop((x, y, x + w, y + h)).tobytes() == tile.tobytes(), k


@pytest.mark.realdata
def test_baseline_reproduces_the_book_on_real_data(real_37_tensors: Path, tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    run_baseline(real_37_tensors, out, tmp_path / "ideal_digits.png")
    m = json.loads(out.read_text())
    assert m["l1"]["per_digit"] == {"3": 0.9168, "7": 0.9854}
    assert m["l1"]["mean_digit_accuracy"] == 0.9511
    assert m["n_valid"] == 2038
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "ideal_digits.png"]
