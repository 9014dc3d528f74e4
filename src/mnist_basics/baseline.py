"""The chapter's first idea, pixel similarity: the mean ("ideal") image of each digit, and each
valid image classified as the digit whose ideal is nearest, by L1 and by RMSE."""

import json
import logging
from pathlib import Path

import torch

from mnist_basics import atomic, images
from mnist_basics.data import Split, load_splits


def mnist_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The book's L1 distance: mean absolute difference over the last two axes (broadcasting)."""
    return (a - b).abs().mean((-1, -2))


def rmse_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The book's other distance: root mean squared difference."""
    return ((a - b) ** 2).mean((-1, -2)).sqrt()


def ideal_digits(split: Split, digits: list[int]) -> torch.Tensor:
    """Mean image of each digit, [len(digits), 28, 28] (the book's mean3 and mean7)."""
    return torch.stack([split.images[split.labels == d].mean(0) for d in digits])


def nearest_ideal(x: torch.Tensor, ideals: torch.Tensor, distance) -> torch.Tensor:
    """Index of the nearest ideal per image; two digits: the book's `is_3` (first when nearer)."""
    dists = torch.stack([distance(x, ideal) for ideal in ideals], dim=1)
    if len(ideals) == 2:
        return (dists[:, 0] >= dists[:, 1]).long()
    return dists.argmin(1)


def accuracies(pred: torch.Tensor, labels: torch.Tensor, digits: list[int]) -> dict:
    """Image-weighted accuracy, the book's mean of per-digit accuracies, and each digit's."""
    truth = torch.tensor(digits)[pred] == labels
    per_digit = {str(d): truth[labels == d].float().mean().item() for d in digits}
    return {
        "accuracy": round(truth.float().mean().item(), 4),
        "mean_digit_accuracy": round(sum(per_digit.values()) / len(per_digit), 4),  # of exact ones
        "per_digit": {d: round(a, 4) for d, a in per_digit.items()},
    }


def run_baseline(tensors: Path, metrics_path: Path, plot_path: Path) -> dict:
    """Ideal digits from train, nearest-ideal accuracy on valid; metrics JSON, the ideals' PNG."""
    train, valid = load_splits(tensors)
    digits = train.digits
    ideals = ideal_digits(train, digits)
    metrics: dict = {
        name: accuracies(nearest_ideal(valid.images, ideals, dist), valid.labels, digits)
        for name, dist in (("l1", mnist_distance), ("rmse", rmse_distance))
    }
    metrics["n_valid"] = len(valid.labels)
    tiles, captions = [images.grey(i.numpy()) for i in ideals], [f"ideal {d}" for d in digits]
    with atomic.together():
        images.save_png(images.labelled_grid(tiles, captions, cols=len(digits)), plot_path)
        atomic.write_text(metrics_path, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    l1, rmse = metrics["l1"], metrics["rmse"]
    logging.getLogger("mnist_basics").info(
        f"L1: accuracy {l1['accuracy']:.4f}, per digit {l1['per_digit']}; "
        f"RMSE: accuracy {rmse['accuracy']:.4f}"
    )
    return metrics
