"""The stacked tensors as the book uses them: float pixels in [0, 1], one row of 784 per image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from mnist_basics.errors import UserError


@dataclass(frozen=True)
class Split:
    """One split, contiguous and on its device: x float [N, 784], labels int64 [N] (the digits)."""

    x: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    @property
    def images(self) -> torch.Tensor:
        """x as [N, 28, 28], the book's view for the pixel-similarity baseline."""
        return self.x.view(-1, 28, 28)


def load_split(path: Path, device: torch.device | str = "cpu") -> Split:
    """Read one split's safetensors and scale pixels as the book does (`.float() / 255`)."""
    if not path.exists():
        raise UserError(f"{path}: missing; run `dvc repro tensorize` first")
    with safe_open(str(path), framework="pt") as f:
        images = f.get_tensor("images")
        labels = f.get_tensor("labels")
        indices = f.get_tensor("indices")
    x = (images.to(device).float() / 255).view(-1, 28 * 28).contiguous()
    return Split(x=x, labels=labels.to(device), indices=indices.to(device))


def digits_of(split: Split) -> list[int]:
    """The digits present in a split, ascending."""
    return sorted(set(split.labels.tolist()))


def class_targets(labels: torch.Tensor, digits: list[int]) -> torch.Tensor:
    """Class index of each label in `digits` order (digits[0] -> 0, digits[1] -> 1, ...)."""
    lut = torch.full((10,), -1, dtype=torch.int64, device=labels.device)
    lut[torch.tensor(digits, device=labels.device)] = torch.arange(
        len(digits), device=labels.device
    )
    return lut[labels]


def binary_targets(labels: torch.Tensor, positive: int) -> torch.Tensor:
    """The book's targets: 1 for the positive digit (a 3), 0 otherwise, shaped [N, 1]."""
    return (labels == positive).float().unsqueeze(1)
