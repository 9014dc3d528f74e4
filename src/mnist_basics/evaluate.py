"""The evaluate stage's work: the trained model on the valid split, as metrics, a confusion
matrix that `dvc plots` draws, and a gallery of the images it gets wrong."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mnist_basics import atomic, device, images
from mnist_basics.data import class_targets, load_split
from mnist_basics.models import load_model, loss_func, predict, predict_classes, targets_for


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Probability the model gives to the class it predicts."""
    if logits.shape[1] == 1:
        p = logits[:, 0].sigmoid()
        return torch.maximum(p, 1 - p)
    return logits.softmax(1).max(1).values


def most_confident_mistakes(logits: torch.Tensor, right: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of up to k wrong predictions, surest first (fastai's "top losses")."""
    wrong = (~right).nonzero().flatten()
    order = confidence(logits[wrong]).argsort(descending=True, stable=True)
    return wrong[order][:k]


def evaluate(
    tensors: Path,
    model_path: Path,
    metrics_path: Path,
    confusion_path: Path,
    plots_dir: Path,
    device_name: str = "auto",
    gallery: int = 36,
) -> dict:
    """Accuracy (overall and per digit), mean loss and image count, plus the two pictures."""
    dev = device.resolve(device_name)
    model, spec = load_model(model_path, dev)
    valid = load_split(tensors / "valid.safetensors", dev)
    digits = list(spec.digits)
    classes = class_targets(valid.labels, digits)
    logits = predict(model, valid.x)
    pred = predict_classes(logits)
    right = pred == classes
    metrics = {
        "accuracy": round(right.float().mean().item(), 4),
        "per_digit": {
            str(d): round(right[classes == k].float().mean().item(), 4)
            for k, d in enumerate(digits)
        },
        "loss": round(loss_func(spec.loss)(logits, targets_for(spec, classes)).item(), 4),
        "n_images": len(classes),
        "n_wrong": int((~right).sum().item()),
    }
    names = [str(d) for d in digits]
    rows = [
        {"actual": names[a], "predicted": names[b]}
        for a, b in zip(classes.tolist(), pred.tolist(), strict=True)
    ]
    wrong = most_confident_mistakes(logits, right, gallery).cpu()
    tiles = [images.grey(valid.images[i].cpu().numpy(), scale=3) for i in wrong.tolist()]
    captions = [f"{names[classes[i]]} as {names[pred[i]]}" for i in wrong.tolist()]
    with atomic.atomic_path(plots_dir, is_dir=True) as tmp:
        images.save_png(images.labelled_grid(tiles, captions), tmp / "misclassified.png")
        atomic.write_text(confusion_path, json.dumps(rows, separators=(",", ":")) + "\n")
        atomic.write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return metrics
