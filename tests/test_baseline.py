"""Pixel similarity: distances, the nearest-ideal rule, and the book's figures on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnist_basics.baseline import mnist_distance, nearest_ideal, rmse_distance, run_baseline


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


@pytest.mark.realdata
def test_baseline_reproduces_the_book_on_real_data(real_37_tensors: Path, tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    run_baseline(real_37_tensors, out, tmp_path / "p")
    m = json.loads(out.read_text())
    assert m["l1"]["per_digit"] == {"3": 0.9168, "7": 0.9854}
    assert m["l1"]["mean_digit_accuracy"] == 0.9511
    assert m["n_valid"] == 2038
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["ideal_3.png", "ideal_7.png"]
