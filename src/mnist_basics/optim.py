"""Optimisers by name: the book's BasicOptim, and torch's SGD (momentum, weight decay) and Adam."""

from collections.abc import Iterable

import torch


class BasicOptim:
    """The book's optimiser: `p -= p.grad * lr`, then zero the grads."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params, self.lr = list(params), lr

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p -= p.grad * self.lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> BasicOptim | torch.optim.Optimizer:
    """The optimiser that params.yaml's `train.optimizer` names."""
    if name == "basic":
        return BasicOptim(params, lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        params = list(params)
        # torch's fused kernel, on the CPU: the other path's sqrt is MKL's vector math, whose
        # results differ between Intel and AMD CPUs whatever the kernel pins.
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}")
