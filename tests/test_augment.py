"""augment: random shifts and small rotations per image, deterministic for a seeded generator."""

from __future__ import annotations

import pytest
import torch

from mnist_basics.augment import augment


def bar_images(n: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 28, 28)
    x[:, 6:22, 12:16] = 1.0
    return x.view(n, 784)


def test_deterministic_per_seed_and_different_per_image() -> None:
    x = bar_images()
    a = augment(x, torch.Generator().manual_seed(3), 2, 10.0)
    b = augment(x, torch.Generator().manual_seed(3), 2, 10.0)
    c = augment(x, torch.Generator().manual_seed(4), 2, 10.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert len({tuple(r.tolist()) for r in (a * 1000).round()}) == len(x)  # one draw per image


def test_no_change_when_off_and_ink_is_kept() -> None:
    x = bar_images()
    assert augment(x, torch.Generator(), 0, 0.0) is x
    a = augment(x, torch.Generator().manual_seed(0), 2, 12.0)
    # the bar stays inside the field: its ink is kept up to the bilinear resampling
    torch.testing.assert_close(a.sum(1), x.sum(1), rtol=0.03, atol=0)


def test_shift_only_moves_at_most_max_shift() -> None:
    x = bar_images(64)
    a = augment(x, torch.Generator().manual_seed(1), 2, 0.0).view(-1, 28, 28)
    cols = torch.arange(28.0)
    centre = (a.sum(1) * cols).sum(1) / a.sum((1, 2))
    assert (centre - 13.5).abs().max() <= 2.0 + 1e-4
    assert (centre - 13.5).abs().max() > 1.0


def test_bad_shape() -> None:
    with pytest.raises(ValueError, match="784"):
        augment(torch.zeros(2, 28, 28), torch.Generator(), 2, 10.0)
