"""The evaluate stage: valid logits to metrics, a confusion matrix and a gallery of mistakes.
Plain NumPy: torch's import costs more than all the work."""

import json
import logging
from pathlib import Path

import numpy as np

from mnist_basics import atomic, images
from mnist_basics.errors import BadFile, UserError
from mnist_basics.tensors import digest, read_split


def load_logits(path: Path) -> tuple[np.ndarray, list[int], str, bytes]:
    """The logits [N, n_out] float32, the digits in class order, the loss they trained on, and
    the SHA-256 of the valid split they were computed on."""
    needs = ("logits", "valid_sha256")
    arrays, meta = atomic.read_safetensors(path, "a logits", "train", needs, "np")
    logits = arrays["logits"]
    if "spec" not in meta:
        raise UserError(f"{path}: not a logits file written by the train stage (no spec metadata)")
    try:
        spec = json.loads(meta["spec"])
        digits, loss = [int(d) for d in spec["digits"]], str(spec["loss_func"])
        if sorted(set(digits)) != sorted(digits) or not all(0 <= d <= 9 for d in digits):
            raise ValueError(f"digits {digits}")
        columns = {"mnist_loss": 1 if len(digits) == 2 else -1, "cross_entropy": len(digits)}
        if loss not in columns:
            raise ValueError(f"loss_func {loss!r}")
        if logits.ndim != 2 or logits.shape[1] != columns[loss]:
            raise ValueError(f"logits of shape {list(logits.shape)} for {loss} of digits {digits}")
        if not np.isfinite(logits).all():
            raise ValueError("logits that are not all finite numbers")
    except (ValueError, TypeError, KeyError) as e:
        what = f"no {e} in it" if isinstance(e, KeyError) else str(e)
        why = f"not a logits file as the train stage writes it (its spec: {what})"
        raise BadFile(path, why, "`dvc repro -f train` writes it again") from None
    return logits, digits, loss, arrays["valid_sha256"].tobytes()


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def predicted_classes(logits: np.ndarray) -> np.ndarray:
    """Class index per image, as models.predict_classes (one logit: 0 when its sigmoid, in
    float32, is > 0.5: the book's batch_accuracy, so a logit under about 9e-8 is the other digit;
    the stage's pinned NumPy turns where torch does)."""
    if logits.shape[1] == 1:
        return (sigmoid(logits[:, 0].astype(np.float32)) <= 0.5).astype(np.int64)
    return logits.argmax(1)


def mean_loss(logits: np.ndarray, classes: np.ndarray, loss: str) -> float:
    """The training loss on these logits: the book's mnist_loss, or cross-entropy."""
    if loss == "mnist_loss":
        p = sigmoid(logits[:, 0].astype(np.float64))
        return float(np.where(classes == 0, 1 - p, p).mean())
    log_p = log_softmax(logits.astype(np.float64))
    return float(-log_p[np.arange(len(classes)), classes].mean())


def most_confident_mistakes(logits: np.ndarray, right: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to k wrong predictions, surest first (fastai's "top losses"): by the
    probability the model gives to the class it predicts."""
    wrong = np.flatnonzero(~right)
    if logits.shape[1] == 1:
        p = sigmoid(logits[wrong, 0])
        sure = np.maximum(p, 1 - p)
    else:
        sure = np.exp(log_softmax(logits[wrong])).max(1)
    return wrong[np.argsort(-sure, kind="stable")][:k]


def evaluate(
    tensors: Path,
    logits_path: Path,
    metrics_path: Path,
    confusion_path: Path,
    plots_dir: Path,
    gallery: int = 36,
) -> dict:
    """Accuracy (overall and per digit), mean loss and image count, plus the two pictures."""
    logits, digits, loss, computed_on = load_logits(logits_path)
    valid_path = tensors / "valid.safetensors"
    # the valid split's images [N, 28, 28] uint8 and labels (the digits), as tensorize wrote them
    valid = read_split(valid_path, "np")
    if digest(valid_path) != computed_on:
        raise UserError(
            f"{logits_path}: logits of another valid split than {valid_path} "
            "(it changed since the train stage ran); run `dvc repro`"
        )
    pixels, labels = valid["images"], valid["labels"]
    lut = np.full(10, -1)
    lut[digits] = np.arange(len(digits))  # digit -> class index, in data.digits' order
    classes = lut[labels]
    held = sorted(set(labels.tolist()))
    if len(logits) != len(labels) or held != sorted(digits):
        raise UserError(
            f"{logits_path}: logits for {len(logits)} images of digits {digits}, but "
            f"{valid_path} holds {len(labels)} of digits {held}; run `dvc repro`"
        )
    pred = predicted_classes(logits)
    right = pred == classes
    metrics = {
        "accuracy": round(float(right.mean()), 4),
        "per_digit": {
            str(d): round(float(right[classes == k].mean()), 4) for k, d in enumerate(digits)
        },
        "loss": round(mean_loss(logits, classes, loss), 4),
        "n_images": len(classes),
        "n_wrong": int((~right).sum()),
    }
    names = [str(d) for d in digits]
    rows = [
        {"actual": names[a], "predicted": names[b]}
        for a, b in zip(classes.tolist(), pred.tolist(), strict=True)
    ]
    wrong = most_confident_mistakes(logits, right, gallery).tolist()
    # pixels / 255 in float32, as the train stage's tensors are scaled
    tiles = [images.grey(pixels[i] / np.float32(255), scale=3) for i in wrong]
    captions = [f"{names[classes[i]]} as {names[pred[i]]}" for i in wrong]
    gallery_png = images.png_bytes(images.labelled_grid(tiles, captions))
    with atomic.together(), atomic.atomic_path(plots_dir, is_dir=True) as tmp:
        (tmp / "misclassified.png").write_bytes(gallery_png)
        atomic.write_text(confusion_path, json.dumps(rows, separators=(",", ":")) + "\n")
        atomic.write_text(metrics_path, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    logging.getLogger("mnist_basics").info(
        f"accuracy {metrics['accuracy']:.4f} on {len(classes)} valid images "
        f"({metrics['n_wrong']} wrong), per digit {metrics['per_digit']}"
    )
    return metrics
