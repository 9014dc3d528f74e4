"""The written-out gradients are autograd's: same loss, same .grad, for every case grads covers;
and a Learner trained with them, step by step or in fused epochs, ends where one trained with
loss.backward() does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_basics.device import cpu_threads
from mnist_basics.grads import closed_form_grad, fused_epoch
from mnist_basics.learner import Learner
from mnist_basics.models import ModelSpec, build_model, loss_func, mnist_loss, targets_for
from mnist_basics.optim import BasicOptim, make_optimizer

CASES = [
    ("linear", "mnist_loss", 2),
    ("simple_net", "mnist_loss", 2),
    ("linear", "cross_entropy", 10),
    ("simple_net", "cross_entropy", 10),
]


def _batch(n: int, n_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.randint(0, n_classes, (n,), generator=g)


def _grads_both_ways(model: str, loss: str, n_classes: int, n: int):
    spec = ModelSpec(model=model, digits=tuple(range(n_classes)), loss=loss)
    x, classes = _batch(n, n_classes)
    y = targets_for(spec, classes)
    torch.manual_seed(1)
    net = build_model(spec)
    expected = loss_func(loss)(net(x), y)
    expected.backward()
    want = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = None
    calc_grad = closed_form_grad(net, loss_func(loss))
    assert calc_grad is not None
    got = calc_grad(x, y)
    return expected, got, want, [p.grad for p in net.parameters()]


@pytest.mark.parametrize("n", [256, 108, 1])  # a full batch, the book's last batch, one image
@pytest.mark.parametrize(("model", "loss", "n_classes"), CASES)
def test_gradients_are_autograds(model: str, loss: str, n_classes: int, n: int) -> None:
    expected, got, want, have = _grads_both_ways(model, loss, n_classes, n)
    assert not got.requires_grad
    assert len(have) == len(want)
    if loss == "mnist_loss":
        # the book's own setup: bit for bit, so training follows the book's exact path
        assert got.item() == expected.item()
        for w, h in zip(want, have, strict=True):
            assert torch.equal(w, h)
    else:
        torch.testing.assert_close(got, expected.detach(), rtol=1e-6, atol=1e-7)
        for w, h in zip(want, have, strict=True):
            torch.testing.assert_close(h, w, rtol=1e-5, atol=1e-7)


def test_autograd_keeps_what_grads_does_not_cover() -> None:
    cnn = build_model(ModelSpec(model="cnn", digits=(3, 7), loss="mnist_loss"))
    assert closed_form_grad(cnn, mnist_loss) is None
    deeper = nn.Sequential(
        nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)
    )
    assert closed_form_grad(deeper, mnist_loss) is None
    linear = build_model(ModelSpec(model="linear", digits=(3, 7), loss="mnist_loss"))
    assert closed_form_grad(linear, F.mse_loss) is None


def test_fused_epochs_only_for_the_books_loss_and_optimiser() -> None:
    spec = ModelSpec(model="linear", digits=(3, 7), loss="mnist_loss")
    linear = build_model(spec)
    params = list(linear.parameters())
    assert fused_epoch(linear, mnist_loss, BasicOptim(params, 1.0)) is not None
    assert fused_epoch(linear, F.cross_entropy, BasicOptim(params, 1.0)) is None
    assert fused_epoch(linear, mnist_loss, make_optimizer("sgd", params, 1.0)) is None
    assert fused_epoch(linear, mnist_loss, BasicOptim(params[:1], 1.0)) is None  # bias frozen
    cnn = build_model(ModelSpec(model="cnn", digits=(3, 7), loss="mnist_loss"))
    assert fused_epoch(cnn, mnist_loss, BasicOptim(cnn.parameters(), 1.0)) is None


def _fit(
    model: str, loss: str, optimizer: str, path: str, shuffle: bool, lr: float = 0.1, bs: int = 64
) -> list:
    """Three epochs on a toy set; path: autograd, closed (calc_grad + opt.step) or fused."""
    n_classes = 2 if loss == "mnist_loss" else 3
    spec = ModelSpec(model=model, digits=tuple(range(n_classes)), loss=loss)
    x, classes = _batch(600, n_classes, seed=3)
    x[classes == 0, :300] += 0.5
    vx, vclasses = _batch(200, n_classes, seed=4)
    vx[vclasses == 0, :300] += 0.5
    torch.manual_seed(0)
    net = build_model(spec)
    learn = Learner(
        model=net,
        train_x=x,
        train_y=targets_for(spec, classes),
        valid_x=vx,
        valid_y=targets_for(spec, vclasses),
        loss_func=loss_func(loss),
        opt=make_optimizer(optimizer, net.parameters(), lr, momentum=0.9),
        batch_size=bs,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(5),
        autograd=path == "autograd",
    )
    if path == "closed":
        learn._fused = None
    assert (learn._closed is None) == (path == "autograd")
    assert (learn._fused is not None) == (path == "fused")
    history = learn.fit(3)
    return [(s.train_loss, s.valid_loss, s.valid_accuracy) for s in history] + [
        p.detach().clone() for p in net.parameters()
    ]


@pytest.mark.parametrize(
    ("model", "loss", "optimizer", "shuffle", "path", "lr", "bs"),
    [
        ("linear", "mnist_loss", "basic", False, "fused", 1.0, 64),  # the book's own run
        ("linear", "mnist_loss", "basic", False, "fused", 1.0, 100),  # no short last batch
        ("linear", "mnist_loss", "basic", True, "fused", 0.1, 64),
        ("simple_net", "mnist_loss", "basic", False, "fused", 0.1, 64),
        ("linear", "mnist_loss", "basic", False, "closed", 1.0, 64),
        ("simple_net", "mnist_loss", "basic", False, "closed", 0.1, 64),
        ("simple_net", "mnist_loss", "sgd", True, "closed", 0.1, 64),
        ("linear", "cross_entropy", "adam", True, "closed", 0.1, 64),
    ],
)
def test_training_ends_where_autograds_does(
    model: str, loss: str, optimizer: str, shuffle: bool, path: str, lr: float, bs: int
) -> None:
    ours = _fit(model, loss, optimizer, path, shuffle, lr, bs)
    auto = _fit(model, loss, optimizer, "autograd", shuffle, lr, bs)
    if loss == "mnist_loss":
        assert ours[:3] == auto[:3]  # every epoch's losses and accuracy, exactly
        for a, b in zip(ours[3:], auto[3:], strict=True):
            assert torch.equal(a, b)
    else:
        for a, b in zip(ours, auto, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_small_models_train_on_one_thread() -> None:
    assert ModelSpec(model="simple_net", digits=(3, 7), loss="mnist_loss").width == 30
    assert ModelSpec(model="linear", digits=tuple(range(10)), loss="cross_entropy").width == 10
    assert cpu_threads("linear", 256, 1) == 1
    assert cpu_threads("simple_net", 256, 30) == 1
    assert cpu_threads("simple_net", 256, 256) == torch.get_num_threads()
    assert cpu_threads("cnn", 256, 1) == torch.get_num_threads()
