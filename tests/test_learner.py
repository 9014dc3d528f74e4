"""The Learner: it learns, it is deterministic, and a diverging run stops with a clear error."""

from __future__ import annotations

import pytest
import torch

from mnist_basics.errors import UserError
from mnist_basics.learner import MAX_WEIGHT, Learner, accuracy, batches
from mnist_basics.models import (
    ModelSpec,
    build_model,
    loss_func,
    predict,
    predict_classes,
    targets_for,
)
from mnist_basics.optim import make_optimizer


def _toy(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 784, generator=g) * 0.2
    x[classes == 0, :392] += 0.6  # class 0 has ink in the top half
    return x, classes


def _learner(
    model: str = "linear",
    lr: float = 1.0,
    seed: int = 0,
    shuffle: bool = False,
    optimizer: str = "basic",
) -> Learner:
    x, classes = _toy()
    spec = ModelSpec(model=model, digits=(3, 7), loss_func="mnist_loss")
    torch.manual_seed(seed)
    m = build_model(spec)
    y = targets_for(spec, classes)
    return Learner(
        m,
        x[:384],
        y[:384],
        x[384:],
        y[384:],
        loss_func(spec.loss_func),
        make_optimizer(optimizer, m.parameters(), lr),
        batch_size=64,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed),
    )


def test_batches_are_views_in_order() -> None:
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    got = list(batches(x, y, 4))
    assert [b[1].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert got[0][0].data_ptr() == x.data_ptr()  # a slice, not a copy


@pytest.mark.parametrize("model", ["linear", "simple_net", "cnn"])
def test_learns_a_separable_toy(model: str) -> None:
    lr = {"linear": 1.0, "simple_net": 0.1, "cnn": 0.01}[model]
    opt = "adam" if model == "cnn" else "basic"
    h = _learner(model, lr, shuffle=model == "cnn", optimizer=opt).fit(8)
    assert h[-1].valid_accuracy > 0.95
    assert h[-1].train_loss < h[0].train_loss


def test_same_seed_same_bits_other_seed_other_bits() -> None:
    a, b, c = (_learner(seed=s, shuffle=True) for s in (1, 1, 2))
    ha, hb, hc = a.fit(3), b.fit(3), c.fit(3)
    assert [s.train_loss for s in ha] == [s.train_loss for s in hb]
    assert all(
        torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )
    assert [s.train_loss for s in ha] != [s.train_loss for s in hc]


def test_diverging_loss_stops_with_epoch_and_hint() -> None:
    learn = _learner("simple_net", lr=1e30)
    with pytest.raises(UserError, match=r"in epoch 1: training diverged; try a lower train.lr"):
        learn.fit(3)


def test_divergence_with_a_finite_loss_stops_too() -> None:
    """lr 1e38: the sigmoid saturates, the loss stays finite, the weights reach 1e36."""
    learn = _learner("linear", lr=1e38)
    with pytest.raises(
        UserError, match=r"weights reached .*e\+3\d .* in epoch 1: training diverged"
    ):
        learn.fit(3)


@pytest.mark.parametrize("lr", [100.0, 1000.0, 1e6])
def test_every_sigmoid_saturated_has_diverged(lr: float) -> None:
    """The weights stay below the limit and the loss is finite, yet every image gets one answer."""
    learn = _learner("linear", lr=lr, seed=1, shuffle=True)
    learn.fit(3)
    logits = predict(learn.model, learn.valid_x)
    assert max(p.abs().max() for p in learn.model.parameters()) < MAX_WEIGHT
    assert predict_classes(logits).unique().numel() == 1
    with pytest.raises(UserError, match=r"sigmoid is saturated \(0 or 1\) after the last epoch"):
        learn.check_saturated(logits)


def test_saturated_and_right_on_every_image_is_done_not_diverged() -> None:
    """A small tree learned whole at lr 100 was refused as diverged (valid loss 1e-18, accuracy
    1.0000 in the very line); but two valid images right by chance, every training image
    wrong, is diverged still."""
    learn = _learner("linear")
    weights, bias = learn.model.parameters()
    with torch.no_grad():  # class 0's ink is in the top half: sure and right on every image
        weights.zero_()
        weights[:392] = 1000.0
        bias.fill_(-1000.0 * 157)
    logits = predict(learn.model, learn.valid_x)
    learn.check_saturated(logits)
    learn.train_y[0] = 1 - learn.train_y[0]  # one training image the model gets wrong
    with pytest.raises(UserError, match=r"sigmoid is saturated \(0 or 1\)"):
        learn.check_saturated(logits)


def test_one_logits_class_is_the_books_rule_everywhere() -> None:
    """Logits under about 9e-8 have a float32 sigmoid of 0.5: the book's batch_accuracy calls them
    the other digit, and so must evaluate, predict and serve (they said 0.96 where train's
    metrics said 0.50)."""
    from mnist_basics.evaluate import predicted_classes

    logits = torch.tensor([[1e-8], [-1e-8], [2e-7], [-2e-7], [0.0]])
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.0]])
    book = (logits.sigmoid() > 0.5).squeeze(1)
    assert book.tolist() == [False, False, True, False, False]
    assert (predict_classes(logits) == 0).tolist() == book.tolist()
    assert (predicted_classes(logits.numpy()) == 0).tolist() == book.tolist()
    assert accuracy(logits, targets) == pytest.approx(0.8)  # the first alone is wrong


def test_saturated_is_diverged_even_when_right_and_a_model_that_learned_little_is_not() -> None:
    learn = _learner("linear", seed=1, shuffle=True)
    learn.check_saturated(predict(learn.model, learn.valid_x))  # untrained: a result, no error
    learn.fit(3)
    learn.check_saturated(predict(learn.model, learn.valid_x))
    with torch.no_grad():
        for p in learn.model.parameters():
            p.mul_(1e4)
    logits = predict(learn.model, learn.valid_x)
    assert accuracy(logits, learn.valid_y) > 0.9
    with pytest.raises(
        UserError,
        match=r"\(valid loss [\d.e+]+, accuracy 0\.9\d+\): training diverged; try a lower "
        r"train.lr \(or train.init_std, if it started so\)",
    ):
        learn.check_saturated(logits)


def test_a_saturated_softmax_has_diverged() -> None:
    learn = _learner("linear")
    logits = torch.zeros(len(learn.valid_x), 10)
    learn.check_saturated(logits)
    logits[:, 3] = 1e4
    with pytest.raises(UserError, match=r"every valid image's softmax is saturated"):
        learn.check_saturated(logits)


def test_calc_grad_is_the_books_backward() -> None:
    """calc_grad leaves loss.backward()'s gradients on the parameters for the optimiser."""
    learn = _learner("linear")
    xb, yb = learn.train_x[:64], learn.train_y[:64]
    w, b = (p.detach().clone().requires_grad_() for p in learn.model.parameters())
    loss = learn.loss_func(xb @ w + b, yb)
    loss.backward()
    assert torch.equal(learn.calc_grad(xb, yb), loss)
    assert torch.equal(learn.model.weights.grad, w.grad)
    assert torch.equal(learn.model.bias.grad, b.grad)


def test_one_cycle_warms_up_then_anneals() -> None:
    from mnist_basics.learner import one_cycle

    assert one_cycle(0.0, 1.0) == pytest.approx(1 / 25)
    assert one_cycle(0.25, 1.0) == pytest.approx(1.0)
    assert one_cycle(1.0, 1.0) == pytest.approx(1 / 25 / 1e4)
    xs = [one_cycle(t / 100, 1.0) for t in range(101)]
    assert xs.index(max(xs)) == 25


def test_schedule_sets_the_lr_of_every_batch() -> None:
    seen: list[float] = []
    learn = _learner()
    step = learn.opt.step

    def spy() -> None:
        seen.append(learn.opt.lr)
        step()

    learn.opt.step = spy
    learn.schedule = lambda t: 1.0 - t
    learn.fit(2)
    assert len(seen) == 12  # 384 images / 64 per batch, 2 epochs
    assert seen[0] == 1.0 and seen[6] == pytest.approx(0.5) and seen[-1] == pytest.approx(1 / 12)


def test_the_largest_allowed_init_std_is_not_called_divergence() -> None:
    """train.init_std allows up to its bound: a linear model drawn with it must not start past
    the divergence limit, whose error would send the user to lower train.lr in vain."""
    from mnist_basics.learner import MAX_WEIGHT
    from mnist_basics.params import validate

    top = validate({"train": {"init_std": 1e5}}).train.init_std
    for seed in range(20):
        torch.manual_seed(seed)
        spec = ModelSpec("linear", (3, 7), "mnist_loss", init_std=top)
        biggest = max(p.abs().max().item() for p in build_model(spec).parameters())
        assert biggest < MAX_WEIGHT / 2
    with pytest.raises(UserError, match=r"train\.init_std = 1000000\.0 .*<= 100,000"):
        validate({"train": {"init_std": 1e6}})
