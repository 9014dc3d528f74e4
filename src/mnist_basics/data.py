"""The stacked tensors as the book uses them: float pixels in [0, 1], one row of 784 per image."""

from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_basics.errors import UserError
from mnist_basics.tensors import read_split


@dataclass(frozen=True)
class Split:
    """One split, contiguous and on its device: x float [N, 784], labels int64 [N] (the digits)."""

    x: torch.Tensor
    labels: torch.Tensor

    @property
    def images(self) -> torch.Tensor:
        """x as [N, 28, 28], the book's view for the pixel-similarity baseline."""
        return self.x.view(-1, 28, 28)

    @property
    def digits(self) -> list[int]:
        return sorted(set(self.labels.tolist()))


def load_split(path: Path, device: torch.device | str = "cpu") -> Split:
    """Read one split's safetensors and scale pixels as the book does (`.float() / 255`)."""
    tensors = read_split(path)
    x = (tensors["images"].to(device).float() / 255).view(-1, 28 * 28).contiguous()
    return Split(x=x, labels=tensors["labels"].to(device))


def load_splits(folder: Path, device: torch.device | str = "cpu") -> tuple[Split, Split]:
    """The train and valid splits, which must hold the same digits."""
    train, valid = (load_split(folder / f"{s}.safetensors", device) for s in ("train", "valid"))
    if train.digits != valid.digits:
        raise UserError(
            f"{folder}: the train split holds digits {train.digits}, the valid split "
            f"{valid.digits}; `dvc repro -f tensorize` writes both again"
        )
    return train, valid


def class_targets(labels: torch.Tensor, digits: list[int]) -> torch.Tensor:
    """Class index of each label in `digits` order (digits[0] -> 0, digits[1] -> 1, ...)."""
    lut = torch.full((10,), -1, dtype=torch.int64)
    lut[digits] = torch.arange(len(digits))
    return lut.to(labels.device)[labels]
