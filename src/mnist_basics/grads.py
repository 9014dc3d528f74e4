"""The gradients `loss.backward()` computes for the chapter's two models, written out by hand.

For `linear1` and `simple_net` under `mnist_loss` or cross-entropy, autograd spends far longer
recording and replaying its graph (~180 us a step here) than the arithmetic takes. These
functions do the same arithmetic in the same order as torch's backward formulas (sigmoid's
`g * (1 - p) * p`, mm's `x.T @ g`, a broadcast add's sum over the batch), so the gradients match
autograd's; tests/test_grads.py checks them against `loss.backward()` for every case here.

`closed_form_grad(model, loss)` returns a `calc_grad(xb, yb) -> loss` for a model and loss it
covers (setting each parameter's `.grad`, so any optimiser steps as usual), None for the rest
(the CNN, custom models), which keep autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mnist_basics.models import Linear1, mnist_loss

# (logits, targets) -> (loss, d loss / d logits)
Head = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
CalcGrad = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# Scalars as 0-dim tensors: an op given a Python number wraps it in a new tensor on every call,
# which costs more than the op itself on a 256-image batch.
_ONE = torch.ones(())


@functools.lru_cache(maxsize=64)
def _inv(n: int) -> torch.Tensor:
    """1 / n in float32, as a mean's backward divides by n."""
    return _ONE / n


def mnist_loss_grad(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mnist_loss of logits z and its gradient in z.

    With sign = 1 - 2 * target (+1 for a 0 target, -1 for a 1), `where(target == 1, 1 - p, p)` is
    `target + sign * p` exactly, and its derivative in p is `sign`; the mean's is 1 / n, and
    sigmoid's `(1 - p) * p`.
    """
    p = z.sigmoid()
    inv_n = _inv(len(z))
    sign = torch.add(_ONE, targets, alpha=-2)
    loss = torch.addcmul(targets, sign, p).mean()
    dz = (sign * inv_n) * (_ONE - p)
    return loss, dz.mul_(p)


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


def _linear1_grad(model: Linear1, head: Head) -> CalcGrad:
    w, b = model.weights, model.bias

    def calc_grad(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            loss, dz = head(xb @ w + b, yb)
            w.grad = xb.T @ dz
            b.grad = dz.sum(0)
        return loss

    return calc_grad


def _simple_net_grad(model: nn.Sequential, head: Head) -> CalcGrad:
    l1, l2 = model[0], model[2]
    w1, b1, w2, b2 = l1.weight, l1.bias, l2.weight, l2.bias

    def calc_grad(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = F.linear(xb, w1, b1).relu_()
            loss, dz = head(F.linear(h, w2, b2), yb)
            w2.grad = dz.T @ h
            b2.grad = dz.sum(0)
            dh = (dz @ w2).mul_(h > 0)
            w1.grad = dh.T @ xb
            b1.grad = dh.sum(0)
        return loss

    return calc_grad


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


def closed_form_grad(model: nn.Module, loss_func: Callable) -> CalcGrad | None:
    """A hand-written calc_grad for `model` and `loss_func`, or None where autograd must do."""
    head = HEADS.get(loss_func)
    if head is None:
        return None
    if isinstance(model, Linear1):
        return _linear1_grad(model, head)
    if _is_simple_net(model):
        return _simple_net_grad(model, head)
    return None
