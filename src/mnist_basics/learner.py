"""Our own Learner: the chapter's training loop, shared by every model, loss and optimiser.

The book's loop (`calc_grad`, `train_epoch`, `validate_epoch`) with three changes of machinery:
batches are slices of contiguous tensors already on the device, not a DataLoader over a list of
(x, y) pairs; for the book's own models `calc_grad` computes the gradients `loss.backward()`
would, written out (mnist_basics.grads), instead of recording an autograd graph per step; and
with the book's mnist_loss and BasicOptim, an epoch runs fused (grads.fused_epoch: each gradient
goes straight into `p -= grad * lr`). Same math, same order, same bits, without a Python object
per image, a graph per batch, or an optimiser call per step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from mnist_basics.errors import UserError
from mnist_basics.grads import CalcGrad, FusedEpoch, closed_form_grad, fused_epoch
from mnist_basics.models import batch_accuracy, predict, predict_classes
from mnist_basics.progress import bar

log = logging.getLogger("mnist_basics")


@dataclass
class EpochStats:
    """What one epoch gives to the log and to dvclive."""

    epoch: int
    train_loss: float
    valid_loss: float
    valid_accuracy: float
    seconds: float


def batches(
    x: torch.Tensor, y: torch.Tensor, bs: int, order: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches as views of contiguous tensors (reordered once per epoch when shuffling)."""
    if order is not None:
        x, y = x[order], y[order]
    return zip(x.split(bs), y.split(bs), strict=True)


def one_cycle(progress: float, lr: float, warm: float = 0.25) -> float:
    """fastai's fit_one_cycle schedule at `progress` in [0, 1]: cosine from lr/25 up to lr over
    the first quarter, then cosine down to lr/250000."""

    def cos(start: float, end: float, t: float) -> float:
        return end + (start - end) / 2 * (1 + math.cos(math.pi * t))

    if progress < warm:
        return cos(lr / 25, lr, progress / warm)
    return cos(lr, lr / 25 / 1e4, (progress - warm) / (1 - warm))


def set_lr(opt: object, lr: float) -> None:
    """Set the learning rate of the book's BasicOptim or of a torch optimiser."""
    if isinstance(opt, torch.optim.Optimizer):
        for group in opt.param_groups:
            group["lr"] = lr
    else:
        opt.lr = lr


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction right: the book's batch_accuracy for one logit, argmax for several."""
    if logits.shape[1] == 1:
        return batch_accuracy(logits, targets).item()
    return (predict_classes(logits) == targets).float().mean().item()


@dataclass
class Learner:
    """Model, data, loss and optimiser, and `fit` to train them the book's way."""

    model: nn.Module
    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    loss_func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    opt: object
    batch_size: int = 256
    shuffle: bool = False
    generator: torch.Generator | None = None
    schedule: Callable[[float], float] | None = None  # lr at progress in [0, 1]; None: constant
    on_epoch: list[Callable[[EpochStats], None]] = field(default_factory=list)
    autograd: bool = False  # True: always loss.backward(), even where grads has the closed form
    _closed: CalcGrad | None = field(init=False, default=None, repr=False)
    _fused: FusedEpoch | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.autograd:
            self._closed = closed_form_grad(self.model, self.loss_func)
            self._fused = fused_epoch(self.model, self.loss_func, self.opt)

    def calc_grad(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The book's calc_grad: predictions, loss, backward (written out where grads can)."""
        if self._closed is not None:
            return self._closed(xb, yb)
        loss = self.loss_func(self.model(xb), yb)
        loss.backward()
        return loss

    def train_epoch(self, epoch: int = 0, epochs: int = 1) -> float:
        """One pass over the training set (epoch counts from 0 for the lr schedule); returns the
        mean loss per image."""
        self.model.train()
        x, y = self.train_x, self.train_y
        if self.shuffle:
            order = torch.randperm(len(x), generator=self.generator).to(x.device)
            x, y = x[order], y[order]
        n_batches = -(-len(x) // self.batch_size)
        lrs = None
        if self.schedule is not None:
            steps = epochs * n_batches
            lrs = [self.schedule((epoch * n_batches + i) / steps) for i in range(n_batches)]
        if self._fused is not None:
            loss = self._fused(x, y, self.batch_size, lrs or [self.opt.lr] * n_batches)
            if lrs:
                set_lr(self.opt, lrs[-1])
            return loss
        losses, sizes = [], []
        for i, (xb, yb) in enumerate(batches(x, y, self.batch_size)):
            if lrs:
                set_lr(self.opt, lrs[i])
            losses.append(self.calc_grad(xb, yb).detach())
            sizes.append(len(xb))
            self.opt.step()
            self.opt.zero_grad()
        # Summed once per epoch: no extra kernels (and no device sync) in the per-batch path.
        weights = torch.tensor(sizes, dtype=torch.float32, device=x.device)
        return (torch.stack(losses) @ weights).item() / len(x)

    def validate_epoch(self) -> tuple[float, float]:
        """Valid loss and accuracy over the whole valid split (image-weighted)."""
        logits = predict(self.model, self.valid_x)
        return self.loss_func(logits, self.valid_y).item(), accuracy(logits, self.valid_y)

    def fit(self, epochs: int, lr: float | None = None) -> list[EpochStats]:
        """Train for `epochs`; stop with a clear error the moment the loss is not finite."""
        history = []
        for epoch in bar(range(1, epochs + 1), desc="train", unit="epoch"):
            t0 = time.perf_counter()
            train_loss = self.train_epoch(epoch - 1, epochs)
            valid_loss, valid_acc = self.validate_epoch()
            if not (math.isfinite(train_loss) and math.isfinite(valid_loss)):
                hint = f"try a lower train.lr than {lr}" if lr else "try a lower train.lr"
                raise UserError(
                    f"loss became {train_loss if not math.isfinite(train_loss) else valid_loss} "
                    f"in epoch {epoch}: training diverged; {hint}"
                )
            stats = EpochStats(epoch, train_loss, valid_loss, valid_acc, time.perf_counter() - t0)
            log.info(
                "epoch %d/%d: train loss %.4f, valid loss %.4f, valid accuracy %.4f (%.2f s)",
                epoch,
                epochs,
                train_loss,
                valid_loss,
                valid_acc,
                stats.seconds,
            )
            for cb in self.on_epoch:
                cb(stats)
            history.append(stats)
        return history
