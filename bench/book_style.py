"""fast.ai's chapter 4 (04_mnist_basics) exactly as the notebook runs it, as one plain script.

The reference that bench/run.py measures the pipeline against. No fastai: `tensor(...)` is
`torch.tensor(np.array(...))`, `untar_data` is a path to an already extracted fast.ai-layout tree
(train/3, train/7, valid/3, valid/7), `DataLoader` is torch.utils.data.DataLoader. Everything else
is the book's code path: one Image.open per file in a list comprehension, torch.stack,
`.float()/255`, torch.cat(...).view(-1, 28*28), `dset = list(zip(train_x, train_y))`,
DataLoader(dset, batch_size=256) without shuffle, init_params / linear1 / mnist_loss / BasicOptim
with lr 1.0 for 20 epochs, then simple_net with lr 0.1 for 40 epochs through the same loop, and
the validation accuracy as the mean of batch_accuracy over the valid batches.

    python bench/book_style.py PATH                      # top to bottom, like the notebook
    python bench/book_style.py PATH --phase tensorize    # only read and stack the PNGs
    python bench/book_style.py --tensors data/tensors --phase linear   # train only

`--tensors` starts from the pipeline's stacked uint8 safetensors instead of the PNGs (a
"train-only" book script: the same data the train stage reads). `--digits` reads other digit
folders (tensorize only for more than two: mnist_loss is the book's two-class loss). The only
additions to the book are `torch.manual_seed(SEED)` before each model's init (so its final
accuracy can be compared with the pipeline's, which seeds the same way) and the image-weighted
accuracy printed beside the book's batch mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

SEED = 42


def tensor(x):
    """fastai's `tensor`, for what the chapter passes it."""
    if isinstance(x, Image.Image):
        return torch.tensor(np.array(x))
    return torch.tensor(x)


def ls_sorted(p: Path) -> list[Path]:
    """fastai's `(path/'train'/'3').ls().sorted()`."""
    return sorted(p.iterdir())


# --- Cell: "tensorize and stack" -------------------------------------------------------------


def read_split(path: Path, split: str, digits: list[int]) -> list[torch.Tensor]:
    """stacked_threes, stacked_sevens (or valid_3_tens, valid_7_tens): one per digit."""
    stacked = []
    for d in digits:
        files = ls_sorted(path / split / str(d))
        digit_tensors = [tensor(Image.open(o)) for o in files]
        stacked.append(torch.stack(digit_tensors).float() / 255)
    return stacked


def read_tensors(tensors: Path, split: str, digits: list[int]) -> list[torch.Tensor]:
    """The same per-digit stacks, from the pipeline's uint8 safetensors (train-only runs)."""
    from safetensors.torch import load_file

    t = load_file(str(tensors / f"{split}.safetensors"))
    return [t["images"][t["labels"] == d].float() / 255 for d in digits]


# --- Cells: pixel similarity -------------------------------------------------------------------


def mnist_distance(a, b):
    return (a - b).abs().mean((-1, -2))


def pixel_similarity(train: list[torch.Tensor], valid: list[torch.Tensor]) -> float:
    mean3, mean7 = train[0].mean(0), train[1].mean(0)

    def is_3(x):
        return mnist_distance(x, mean3) < mnist_distance(x, mean7)

    accuracy_3s = is_3(valid[0]).float().mean()
    accuracy_7s = (1 - is_3(valid[1]).float()).mean()
    return ((accuracy_3s + accuracy_7s) / 2).item()


# --- Cells: SGD on a linear model, then simple_net ------------------------------------------------


def datasets(train, valid):
    """train_x, train_y, dset, valid_dset, exactly as the chapter builds them."""
    train_x = torch.cat(train).view(-1, 28 * 28)
    train_y = tensor([1] * len(train[0]) + [0] * len(train[1])).unsqueeze(1)
    dset = list(zip(train_x, train_y, strict=True))
    valid_x = torch.cat(valid).view(-1, 28 * 28)
    valid_y = tensor([1] * len(valid[0]) + [0] * len(valid[1])).unsqueeze(1)
    valid_dset = list(zip(valid_x, valid_y, strict=True))
    return dset, valid_dset


def init_params(size, std=1.0):
    return (torch.randn(size) * std).requires_grad_()


def mnist_loss(predictions, targets):
    predictions = predictions.sigmoid()
    return torch.where(targets == 1, 1 - predictions, predictions).mean()


def batch_accuracy(xb, yb):
    preds = xb.sigmoid()
    correct = (preds > 0.5) == yb
    return correct.float().mean()


class BasicOptim:
    def __init__(self, params, lr):
        self.params, self.lr = list(params), lr

    def step(self, *args, **kwargs):
        for p in self.params:
            p.data -= p.grad.data * self.lr

    def zero_grad(self, *args, **kwargs):
        for p in self.params:
            p.grad = None


def calc_grad(xb, yb, model):
    preds = model(xb)
    loss = mnist_loss(preds, yb)
    loss.backward()


def train_epoch(model, dl, opt):
    for xb, yb in dl:
        calc_grad(xb, yb, model)
        opt.step()
        opt.zero_grad()


def validate_epoch(model, valid_dl):
    accs = [batch_accuracy(model(xb), yb) for xb, yb in valid_dl]
    return round(torch.stack(accs).mean().item(), 4)


def image_weighted_accuracy(model, valid_dl) -> float:
    """Not the book's: right / images, what the pipeline reports (the last batch is short)."""
    with torch.no_grad():
        right = sum(((model(xb).sigmoid() > 0.5) == yb).sum().item() for xb, yb in valid_dl)
    return right / len(valid_dl.dataset)


def train_model(model, epochs, dl, valid_dl, opt, verbose=True):
    for _ in range(epochs):
        train_epoch(model, dl, opt)
        acc = validate_epoch(model, valid_dl)
        if verbose:
            print(acc, end=" ", flush=True)
    if verbose:
        print()
    return acc


def make_linear():
    """weights, bias = init_params((28*28, 1)), init_params(1); linear1 = xb@weights + bias."""
    torch.manual_seed(SEED)
    weights = init_params((28 * 28, 1))
    bias = init_params(1)

    def linear1(xb):
        return xb @ weights + bias

    return linear1, (weights, bias)


def make_simple_net():
    torch.manual_seed(SEED)
    simple_net = nn.Sequential(nn.Linear(28 * 28, 30), nn.ReLU(), nn.Linear(30, 1))
    return simple_net, simple_net.parameters()


MODELS = {"linear": (make_linear, 1.0, 20), "simple_net": (make_simple_net, 0.1, 40)}


def fit(name, dset, valid_dset, verbose=True) -> dict:
    """One model of the chapter, its book accuracy and the image-weighted one."""
    make, lr, epochs = MODELS[name]
    dl = DataLoader(dset, batch_size=256)
    valid_dl = DataLoader(valid_dset, batch_size=256)
    model, params = make()
    opt = BasicOptim(params, lr)
    acc = train_model(model, epochs, dl, valid_dl, opt, verbose)
    return {"batch_mean": acc, "image_weighted": image_weighted_accuracy(model, valid_dl)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", type=Path, help="fast.ai-layout tree (train/, valid/)")
    ap.add_argument("--tensors", type=Path, help="start from data/tensors/*.safetensors")
    ap.add_argument("--phase", default="all", choices=["all", "tensorize", *MODELS])
    ap.add_argument("--models", default="linear,simple_net", help="models for --phase all")
    ap.add_argument("--digits", default="3,7")
    a = ap.parse_args(argv)
    if (a.path is None) == (a.tensors is None):
        ap.error("give either PATH or --tensors")
    digits = [int(d) for d in a.digits.split(",")]
    torch.set_num_threads(max(1, torch.get_num_threads()))

    if a.path is not None:
        train = read_split(a.path, "train", digits)
        valid = read_split(a.path, "valid", digits)
    else:
        train = read_tensors(a.tensors, "train", digits)
        valid = read_tensors(a.tensors, "valid", digits)
    print("stacked:", {d: list(t.shape) for d, t in zip(digits, train, strict=True)})
    if a.phase == "tensorize":
        return
    if len(digits) != 2:
        sys.exit("the chapter's models are for two digits")
    out = {}
    if a.phase == "all":
        out["pixel_similarity"] = round(pixel_similarity(train, valid), 4)
        print("pixel similarity accuracy:", out["pixel_similarity"])
    dset, valid_dset = datasets(train, valid)
    names = a.models.split(",") if a.phase == "all" else [a.phase]
    for name in names:
        print(f"{name}:", end=" ")
        out[name] = fit(name, dset, valid_dset)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
