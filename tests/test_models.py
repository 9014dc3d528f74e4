"""The chapter's pieces against hand computations: init, linear1, loss, accuracy, one SGD step."""

from __future__ import annotations

import pytest
import torch

from mnist_basics import models
from mnist_basics.models import (
    ModelSpec,
    batch_accuracy,
    build_model,
    init_params,
    linear1,
    load_model,
    mnist_loss,
    predict_classes,
    save_tensors,
)
from mnist_basics.optim import BasicOptim, make_optimizer


def test_init_params_is_randn_times_std_with_grad() -> None:
    torch.manual_seed(0)
    p = init_params((784, 1), std=0.5)
    torch.manual_seed(0)
    expected = torch.randn(784, 1) * 0.5
    assert p.requires_grad and p.shape == (784, 1)
    assert torch.equal(p.detach(), expected)


def test_linear1_is_matmul_plus_bias() -> None:
    xb, w, b = torch.ones(2, 3), torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([0.5])
    assert torch.equal(linear1(xb, w, b), torch.tensor([[6.5], [6.5]]))


def test_mnist_loss_matches_the_books_example() -> None:
    # The book: trgts = [1,0,1], prds = [0.9,0.4,0.2] (already probabilities) -> 0.4333.
    trgts, prds = torch.tensor([1, 0, 1]), torch.tensor([0.9, 0.4, 0.2])
    logits = torch.logit(prds)
    assert mnist_loss(logits, trgts).item() == pytest.approx((0.1 + 0.4 + 0.8) / 3, abs=1e-6)


def test_batch_accuracy() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    targets = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    assert batch_accuracy(logits, targets).item() == 0.5


def test_accuracy_as_loss_has_zero_gradient_but_mnist_loss_does_not() -> None:
    """The chapter's point: a small change of weights rarely changes accuracy, so its gradient
    is zero almost everywhere; mnist_loss (through the sigmoid) always has a gradient."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 784), (torch.rand(64, 1) > 0.5).float()
    w, b = init_params((784, 1)), init_params(1)
    acc = ((linear1(x, w, b) > 0).float() == y).float().mean()
    assert not acc.requires_grad  # comparison cuts the graph: no gradient at all
    loss = mnist_loss(linear1(x, w, b), y)
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_one_basic_sgd_step_against_hand_computation() -> None:
    w = torch.tensor([[1.0], [-1.0]], requires_grad=True)
    b = torch.tensor([0.0], requires_grad=True)
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0]])
    loss = mnist_loss(linear1(x, w, b), y)  # pred = -1, loss = 1 - sigmoid(-1)
    loss.backward()
    s = torch.sigmoid(torch.tensor(-1.0))
    dpred = -(s * (1 - s))  # d(1 - sigmoid(z))/dz
    opt = BasicOptim([w, b], lr=0.5)
    opt.step()
    opt.zero_grad()
    assert torch.allclose(w.detach(), torch.tensor([[1.0], [-1.0]]) - 0.5 * dpred * x.T)
    assert torch.allclose(b.detach(), -0.5 * dpred.reshape(1))
    assert w.grad is None and b.grad is None


def test_torch_sgd_with_momentum_and_weight_decay_matches_hand_computation() -> None:
    p = torch.tensor([1.0], requires_grad=True)
    opt = make_optimizer("sgd", [p], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(2):
        (p * 3).sum().backward()  # gradient 3
        opt.step()
        opt.zero_grad()
    g1 = 3 + 0.01 * 1.0
    p1 = 1.0 - 0.1 * g1
    g2 = 3 + 0.01 * p1
    buf2 = 0.9 * g1 + g2
    assert p.item() == pytest.approx(p1 - 0.1 * buf2, abs=1e-6)


def test_adam_first_step_moves_each_weight_by_lr() -> None:
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = make_optimizer("adam", [p], lr=0.01)
    (p * torch.tensor([5.0, -0.1])).sum().backward()
    opt.step()
    # Adam's bias-corrected first step is lr * g / (|g| + eps): the sign of g, times lr.
    assert torch.allclose(p.detach(), torch.tensor([0.99, -1.99]), atol=1e-6)


@pytest.mark.parametrize("model", ["linear", "simple_net", "cnn"])
@pytest.mark.parametrize("digits", [(3, 7), (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)])
def test_every_model_maps_784_pixels_to_one_logit_per_class(model: str, digits: tuple) -> None:
    loss = "mnist_loss" if len(digits) == 2 else "cross_entropy"
    spec = ModelSpec(model=model, digits=digits, loss_func=loss)
    out = build_model(spec)(torch.rand(5, 784))
    assert out.shape == (5, 1 if len(digits) == 2 else len(digits))


def test_simple_net_is_the_books() -> None:
    net = models.simple_net()
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(30, 784), (30,), (1, 30), (1,)]
    assert isinstance(net[1], torch.nn.ReLU)


def test_predict_classes_one_logit_and_many() -> None:
    assert predict_classes(torch.tensor([[0.3], [-0.2]])).tolist() == [0, 1]
    assert predict_classes(torch.tensor([[0.1, 0.9, 0.0]])).tolist() == [1]


def test_model_round_trips_through_safetensors(tmp_path) -> None:
    torch.manual_seed(1)
    spec = ModelSpec(model="simple_net", digits=(3, 7), loss_func="mnist_loss", hidden=8)
    model = build_model(spec)
    save_tensors(model.state_dict(), spec, tmp_path / "m.safetensors")
    again, spec2 = load_model(tmp_path / "m.safetensors")
    assert spec2 == spec
    x = torch.rand(4, 784)
    assert torch.equal(model(x), again(x))
    assert b"pickle" not in (tmp_path / "m.safetensors").read_bytes()[:200]
