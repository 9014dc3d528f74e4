"""The train stage's work: params to a Learner, a fitted model, its curves and weights picture,
and its logits for the valid split (what the evaluate stage reads)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from mnist_basics import atomic, device, images
from mnist_basics.data import class_targets, digits_of, load_split
from mnist_basics.errors import UserError
from mnist_basics.learner import EpochStats, Learner, one_cycle
from mnist_basics.models import (
    ModelSpec,
    build_model,
    loss_func,
    predict,
    save_logits,
    save_model,
    targets_for,
)
from mnist_basics.optim import make_optimizer
from mnist_basics.params import BOOK_EPOCHS, BOOK_LR

log = logging.getLogger("mnist_basics")


@dataclass(frozen=True)
class Paths:
    """Where the train stage reads and writes."""

    tensors: Path = Path("data/tensors")
    model: Path = Path("models/model.safetensors")
    live: Path = Path("metrics/train")
    plots: Path = Path("plots/train")
    logits: Path = Path("models/valid_logits.safetensors")


def resolve_loss(loss: str, digits: list[int]) -> str:
    """`auto` is the book's mnist_loss for two digits and cross-entropy for more."""
    if loss == "auto":
        return "mnist_loss" if len(digits) == 2 else "cross_entropy"
    if loss == "mnist_loss" and len(digits) != 2:
        raise UserError(
            f"params.yaml: train.loss = mnist_loss needs exactly two digits, data.digits has "
            f"{len(digits)}; allowed here: auto, cross_entropy"
        )
    return loss


def seed_everything(seed: int, dev: torch.device) -> torch.Generator:
    """Seed torch's global RNG (model init) and return a generator for the shuffles.

    CPU kernels are deterministic already; only a GPU needs torch's deterministic mode, whose
    switch alone costs 3 s of imports (torch's compiler stack).
    """
    torch.manual_seed(seed)
    if dev.type != "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def check_digits(digits: list[int], found: list[int]) -> None:
    """The tensors must hold exactly the digits that params ask for."""
    if sorted(digits) != found:
        raise UserError(
            f"params.yaml: data.digits = {digits} but data/tensors holds {found}; "
            "run `dvc repro` so download and tensorize follow data.digits"
        )


def weights_picture(model: torch.nn.Module, spec: ModelSpec) -> images.Image.Image:
    """What the first layer looks at: one 28x28 heat map per output (linear) or hidden unit."""
    first = next(p for n, p in model.named_parameters() if "weight" in n).detach().cpu()
    if spec.model == "linear":
        maps = first.T.reshape(-1, 28, 28).numpy()
        if spec.n_out == 1:
            captions = [f"red: votes for {spec.digits[0]}, blue: for {spec.digits[1]}"]
        else:
            captions = [f"class {d}" for d in spec.digits]
        scale = 8 if len(maps) == 1 else 4
    elif spec.model == "simple_net":
        maps = first.reshape(-1, 28, 28).numpy()[:36]
        captions = [f"hidden {i}" for i in range(len(maps))]
        scale = 4
    else:
        k = first.reshape(first.shape[0], -1, first.shape[-2], first.shape[-1])[:, 0].numpy()
        maps = k
        captions = [f"conv1 {i}" for i in range(len(maps))]
        scale = 24
    tiles = [
        images.heat(np.asarray(m), scale=1).resize(
            (m.shape[1] * scale, m.shape[0] * scale), images.Image.Resampling.NEAREST
        )
        for m in maps
    ]
    return images.labelled_grid(tiles, captions, cols=1 if len(tiles) == 1 else 6)


def train(p: dict, paths: Paths = Paths()) -> list[EpochStats]:
    """Train the model that params describe; write model, dvclive curves and weights picture."""
    tp, digits = p["train"], list(p["data"]["digits"])
    dev = device.resolve(tp["device"])
    gen = seed_everything(tp["seed"], dev)
    train_split = load_split(paths.tensors / "train.safetensors", dev)
    valid_split = load_split(paths.tensors / "valid.safetensors", dev)
    check_digits(digits, digits_of(train_split))
    spec = ModelSpec(
        model=tp["model"],
        digits=tuple(digits),
        loss=resolve_loss(tp["loss"], digits),
        hidden=tp["hidden"],
        init_std=tp["init_std"],
    )
    lr = tp["lr"] if tp["lr"] is not None else BOOK_LR[spec.model]
    epochs = tp["epochs"] if tp["epochs"] is not None else BOOK_EPOCHS[spec.model]
    if dev.type == "cpu":
        torch.set_num_threads(device.cpu_threads(spec.model, tp["batch_size"], spec.width))
    model = build_model(spec).to(dev)
    opt = make_optimizer(
        tp["optimizer"], model.parameters(), lr, tp["momentum"], tp["weight_decay"]
    )
    learn = Learner(
        model=model,
        train_x=train_split.x,
        train_y=targets_for(spec, class_targets(train_split.labels, digits)),
        valid_x=valid_split.x,
        valid_y=targets_for(spec, class_targets(valid_split.labels, digits)),
        loss_func=loss_func(spec.loss),
        opt=opt,
        batch_size=tp["batch_size"],
        shuffle=tp["shuffle"],
        generator=gen,
        schedule=partial(one_cycle, lr=lr) if tp["schedule"] == "one_cycle" else None,
    )
    log.info(
        "%s, %s, %s optimizer, lr %g, %d epochs, %d train / %d valid images on %s (%d threads)",
        spec.model,
        spec.loss,
        tp["optimizer"],
        lr,
        epochs,
        len(train_split.x),
        len(valid_split.x),
        dev,
        torch.get_num_threads(),
    )
    with atomic.atomic_path(paths.live, is_dir=True) as live_dir:
        with Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            live.log_params(
                {
                    "model": spec.model,
                    "loss": spec.loss,
                    "lr": lr,
                    "epochs": epochs,
                    "optimizer": tp["optimizer"],
                    "schedule": tp["schedule"],
                    "digits": digits,
                }
            )
            learn.on_epoch.append(lambda s: _log_epoch(live, s))
            history = learn.fit(epochs, lr)
        save_model(model, spec, paths.model)
        save_logits(predict(model, valid_split.x), spec, paths.logits)
        with atomic.atomic_path(paths.plots, is_dir=True) as plots_dir:
            images.save_png(weights_picture(model, spec), plots_dir / "weights.png")
    return history


def _log_epoch(live: Live, s: EpochStats) -> None:
    live.step = s.epoch  # steps count epochs from 1, so the curves' x axis reads as epochs
    live.log_metric("train/loss", s.train_loss)
    live.log_metric("valid/loss", s.valid_loss)
    live.log_metric("valid/accuracy", s.valid_accuracy)
    live.next_step()
