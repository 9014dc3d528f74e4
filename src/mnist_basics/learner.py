"""Our own Learner: the book's `calc_grad`, `train_epoch` and `validate_epoch`, for every model,
loss and optimiser. A batch is a slice of a tensor, not a DataLoader's item; math and order stay."""

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mnist_basics.errors import UserError
from mnist_basics.models import batch_accuracy, predict, predict_classes

log = logging.getLogger("mnist_basics")
# Past this, the sigmoid is saturated for every image and float32 has lost the pixels' share of
# each logit: training has diverged even if the loss still looks finite.
MAX_WEIGHT = 1e6


@dataclass
class EpochStats:
    """What one epoch gives to the log and to the curves."""

    epoch: int
    train_loss: float
    valid_loss: float
    valid_accuracy: float
    seconds: float


def batches(
    x: torch.Tensor, y: torch.Tensor, bs: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches as views of contiguous tensors, in order."""
    return zip(x.split(bs), y.split(bs), strict=True)


def one_cycle(progress: float, lr: float, warm: float = 0.25) -> float:
    """fastai's fit_one_cycle schedule (cosine up from lr/25, then down) at `progress` in [0, 1]."""

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
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # applied to training batches

    def calc_grad(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The book's calc_grad: predictions, loss, backward."""
        preds = self.model(xb)
        loss = self.loss_func(preds, yb)
        loss.backward()
        return loss

    def train_epoch(self, epoch: int = 0, epochs: int = 1) -> float:
        """One pass over the training set (epoch from 0, for the schedule); mean loss per image."""
        self.model.train()
        x, y = self.train_x, self.train_y
        if self.shuffle:
            order = torch.randperm(len(x), generator=self.generator).to(x.device)
            x, y = x[order], y[order]
        n_batches = -(-len(x) // self.batch_size)
        total = 0.0
        for i, (xb, yb) in enumerate(batches(x, y, self.batch_size)):
            if self.schedule is not None:
                set_lr(self.opt, self.schedule((epoch * n_batches + i) / (epochs * n_batches)))
            if self.transform is not None:
                xb = self.transform(xb)
            loss = self.calc_grad(xb, yb)
            self.opt.step()
            self.opt.zero_grad()
            total += loss.item() * len(xb)
        return total / len(x)

    def validate_epoch(self) -> tuple[float, float]:
        """Valid loss and accuracy over the whole valid split (image-weighted)."""
        logits = predict(self.model, self.valid_x)
        return self.loss_func(logits, self.valid_y).item(), accuracy(logits, self.valid_y)

    def check_diverged(self, epoch: int, losses: tuple[float, float]) -> None:
        """Stop with one clear line once the loss is not finite or the weights have blown up."""
        biggest = max(p.detach().abs().max().item() for p in self.model.parameters())
        what = next((f"loss became {v}" for v in losses if not math.isfinite(v)), None)
        if what is None and biggest > MAX_WEIGHT:
            what = f"weights reached {biggest:.3g} (beyond {MAX_WEIGHT:g})"
        if what is not None:
            raise UserError(f"{what} in epoch {epoch}: training diverged; try a lower train.lr")

    def check_saturated(self, logits: torch.Tensor) -> None:
        """Stop if every valid image's sigmoid (or top softmax) is within float32's epsilon of 0 or
        1: diverged with no gradient left, unless every image of both splits is right (a small
        tree learned whole is done; two valid images can be right by chance). A run that learned
        little is a result, not an error."""
        one = logits.shape[1] == 1
        p = torch.sigmoid(logits) if one else torch.softmax(logits, 1).amax(1)
        if bool((p * (1 - p) < torch.finfo(p.dtype).eps).all()) and not self.all_right(logits):
            loss = self.loss_func(logits, self.valid_y).item()
            raise UserError(
                f"every valid image's {'sigmoid' if one else 'softmax'} is saturated (0 or 1) "
                f"after the last epoch (valid loss {loss:.4g}, accuracy "
                f"{accuracy(logits, self.valid_y):.4f}): training diverged; try a lower train.lr "
                "(or train.init_std, if it started so)"
            )

    def all_right(self, valid_logits: torch.Tensor) -> bool:
        """Whether the model gets every valid and every training image right."""
        if accuracy(valid_logits, self.valid_y) < 1:
            return False
        return accuracy(predict(self.model, self.train_x), self.train_y) == 1

    def fit(self, epochs: int) -> list[EpochStats]:
        """Train for `epochs`, one log line per epoch; the history of every epoch."""
        history = []
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            train_loss = self.train_epoch(epoch - 1, epochs)
            valid_loss, valid_acc = self.validate_epoch()
            self.check_diverged(epoch, (train_loss, valid_loss))
            stats = EpochStats(epoch, train_loss, valid_loss, valid_acc, time.perf_counter() - t0)
            log.info(
                f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, valid loss "
                f"{valid_loss:.4f}, valid accuracy {valid_acc:.4f} ({stats.seconds:.2f} s)"
            )
            history.append(stats)
        return history
