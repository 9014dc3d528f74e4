"""The gradients `loss.backward()` computes for the chapter's two models, written out by hand.

For `linear1` and `simple_net` under `mnist_loss` or cross-entropy, autograd spends far longer
recording and replaying its graph (~180 us a step here) than the arithmetic takes. These
functions do the same arithmetic in the same order as torch's backward formulas (sigmoid's
`sigmoid_backward`, mm's `x.T @ g`, a broadcast add's sum over the batch, relu's
`threshold_backward`), so the gradients match autograd's; tests/test_grads.py checks them
against `loss.backward()` for every case here.

Two ways to use them:
- `closed_form_grad(model, loss)`: a `calc_grad(xb, yb) -> loss` that sets each parameter's
  `.grad`, so any optimiser steps as usual.
- `fused_epoch(model, loss, opt)`: for the book's own setup (mnist_loss, BasicOptim), a whole
  epoch in which each gradient goes straight into `p -= grad * lr`, with no `.grad`, no optimiser
  call and no per-step loss: the epoch's probabilities are kept and its loss summed once at the
  end. Every weight and every epoch's loss come out bit for bit as calc_grad + BasicOptim's.
Both return None for what they don't cover (the CNN, custom models), which keeps autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnist_basics.models import Linear1, mnist_loss
from mnist_basics.optim import BasicOptim

# (logits, target) -> (whatever the caller keeps, d loss / d logits)
Head = Callable[[torch.Tensor, Any], tuple[Any, torch.Tensor]]
# (xb, head, target) -> (the head's first result, the gradients in model.parameters() order)
ForwardBackward = Callable[[torch.Tensor, Head, Any], tuple[Any, list[torch.Tensor]]]
CalcGrad = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (x, y, batch size, lr of each step) -> the epoch's mean train loss per image
FusedEpoch = Callable[[torch.Tensor, torch.Tensor, int, Sequence[float]], float]

# Scalars as 0-dim tensors: an op given a Python number wraps it in a new tensor on every call,
# which costs more than the op itself on a 256-image batch.
_ONE = torch.ones(())
_sigmoid_backward = torch.ops.aten.sigmoid_backward  # g * (1 - p) * p, autograd's own kernel
_threshold_backward = torch.ops.aten.threshold_backward  # relu's backward: g where h > 0


@functools.lru_cache(maxsize=64)
def _inv(n: int) -> torch.Tensor:
    """1 / n in float32, as a mean's backward divides by n."""
    return _ONE / n


def mnist_loss_grad(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mnist_loss of logits z and its gradient in z.

    With sign = 1 - 2 * target (+1 for a 0 target, -1 for a 1), `where(target == 1, 1 - p, p)` is
    `target + sign * p` exactly, and its derivative in p is `sign`; the mean's is 1 / n.
    """
    p = z.sigmoid()
    sign = torch.add(_ONE, targets, alpha=-2)
    loss = torch.addcmul(targets, sign, p).mean()
    return loss, _sigmoid_backward(sign * _inv(len(z)), p)


def cross_entropy_grad(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of logits z and its gradient in z: (softmax(z) - one_hot(target)) / n,
    computed as log_softmax's backward does: `g - exp(log_p) * g.sum(1)`, with g = -1/n at each
    target (nll_loss's backward) and 0 elsewhere."""
    log_p = z.log_softmax(1)
    loss = F.nll_loss(log_p, targets)
    inv_n = _inv(len(z))
    d = log_p.exp_().mul_(inv_n)
    d[torch.arange(len(z), device=z.device), targets] -= inv_n
    return loss, d


HEADS: dict[Callable, Head] = {mnist_loss: mnist_loss_grad, F.cross_entropy: cross_entropy_grad}


def _linear1(model: Linear1) -> ForwardBackward:
    w, b = model.weights.detach(), model.bias.detach()

    def forward_backward(xb: torch.Tensor, head: Head, target: Any):
        # linear1's xb @ weights + bias in one kernel (addmm adds the bias after the product,
        # so the bits are the same)
        kept, dz = head(torch.addmm(b, xb, w), target)
        return kept, [torch.mm(xb.T, dz), dz.sum(0)]

    return forward_backward


def _simple_net(model: nn.Sequential) -> ForwardBackward:
    w1, b1 = model[0].weight.detach(), model[0].bias.detach()
    w2, b2 = model[2].weight.detach(), model[2].bias.detach()

    def forward_backward(xb: torch.Tensor, head: Head, target: Any):
        h = F.linear(xb, w1, b1).relu_()
        kept, dz = head(F.linear(h, w2, b2), target)
        dh = _threshold_backward(dz @ w2, h, 0)
        return kept, [dh.T @ xb, dh.sum(0), dz.T @ h, dz.sum(0)]

    return forward_backward


def _is_simple_net(model: nn.Module) -> bool:
    return (
        isinstance(model, nn.Sequential)
        and len(model) == 3
        and isinstance(model[0], nn.Linear)
        and isinstance(model[1], nn.ReLU)
        and isinstance(model[2], nn.Linear)
        and model[0].bias is not None
        and model[2].bias is not None
    )


def _forward_backward(model: nn.Module) -> ForwardBackward | None:
    if isinstance(model, Linear1):
        return _linear1(model)
    if _is_simple_net(model):
        return _simple_net(model)
    return None


def closed_form_grad(model: nn.Module, loss_func: Callable) -> CalcGrad | None:
    """A hand-written calc_grad for `model` and `loss_func`, or None where autograd must do."""
    head = HEADS.get(loss_func)
    fb = _forward_backward(model) if head is not None else None
    if fb is None:
        return None
    params = list(model.parameters())

    def calc_grad(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss, grads = fb(xb, head, yb)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        return loss

    return calc_grad


def _probs_head(z: torch.Tensor, dloss_dp_and_out: tuple[torch.Tensor, torch.Tensor]):
    """mnist_loss's gradient in z, given d loss / d p per image; p is written into the epoch's
    buffer, where the epoch's loss is taken from at its end."""
    dloss_dp, out = dloss_dp_and_out
    return None, _sigmoid_backward(dloss_dp, torch.sigmoid(z, out=out))


def _mnist_loss_per_batch(y: torch.Tensor, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: d(mnist_loss of its batch) / d p, that is (1 - 2 * target) / batch size, and
    the sizes of the batches."""
    one = _ONE.to(y.device)
    sizes = torch.tensor([len(c) for c in y.split(bs)], device=y.device)
    inv = (one / sizes).repeat_interleave(sizes).view_as(y)
    return torch.add(one, y, alpha=-2).mul_(inv), sizes


def fused_epoch(model: nn.Module, loss_func: Callable, opt: object) -> FusedEpoch | None:
    """The book's calc_grad + BasicOptim.step for a whole epoch, or None where they don't fit:
    another loss, another optimiser, or an optimiser over other parameters than the model's."""
    fb = _forward_backward(model) if loss_func is mnist_loss else None
    params = list(model.parameters())
    same_params = type(opt) is BasicOptim and list(map(id, opt.params)) == list(map(id, params))
    if fb is None or not same_params:
        return None
    weights = [p.detach() for p in params]

    def epoch(x: torch.Tensor, y: torch.Tensor, bs: int, lrs: Sequence[float]) -> float:
        dloss_dp, sizes = _mnist_loss_per_batch(y, bs)
        probs = torch.empty_like(y)
        steps = zip(x.split(bs), dloss_dp.split(bs), probs.split(bs), lrs, strict=True)
        for xb, g, out, lr in steps:
            _, grads = fb(xb, _probs_head, (g, out))
            for w, grad in zip(weights, grads, strict=True):
                w.sub_(grad if lr == 1 else grad.mul_(lr))  # BasicOptim: p -= p.grad * lr
        # each batch's mnist_loss, as calc_grad returns it (a row's mean is the same sum as a
        # batch's), then their image-weighted mean
        per_image = torch.where(y == 1, 1 - probs, probs).view(-1)
        full = len(y) // bs * bs
        losses = per_image[:full].view(-1, bs).mean(1)
        if full < len(y):
            losses = torch.cat([losses, per_image[full:].mean().view(1)])
        return (losses @ sizes.float()).item() / len(y)

    return epoch
