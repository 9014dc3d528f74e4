"""The chapter's models (under the book's names) and those beyond it, their losses and files.
Each maps x [N, 784] in [0, 1] to one logit (two digits, the book's setup) or one per class."""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

from mnist_basics import atomic
from mnist_basics.errors import BadFile, UserError
from mnist_basics.params import validate


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to rebuild a model from its weights; saved in the safetensors metadata."""

    model: str  # linear | simple_net | cnn
    digits: tuple[int, ...]
    loss_func: str  # mnist_loss | cross_entropy
    hidden: int = 30
    init_std: float = 1.0
    width: int = 16  # cnn's first block's channels

    @property
    def n_out(self) -> int:
        """One logit for the book's two-digit mnist_loss, one per class for cross-entropy."""
        return 1 if self.loss_func == "mnist_loss" else len(self.digits)


def init_params(size: tuple[int, ...] | int, std: float = 1.0) -> torch.Tensor:
    """The book's init: standard normal times std, with gradients."""
    return (torch.randn(size) * std).requires_grad_()


def linear1(xb: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The book's linear model: `xb @ weights + bias`."""
    return xb @ weights + bias


class Linear1(nn.Module):
    """`linear1` with its `weights` and `bias` held as parameters, initialised by `init_params`."""

    def __init__(self, n_out: int, std: float = 1.0) -> None:
        super().__init__()
        self.weights = nn.Parameter(init_params((28 * 28, n_out), std))
        self.bias = nn.Parameter(init_params(n_out, std))

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return linear1(xb, self.weights, self.bias)


def simple_net(hidden: int = 30, n_out: int = 1) -> nn.Sequential:
    """The book's simple_net: Linear(784, 30), ReLU, Linear(30, 1)."""
    return nn.Sequential(nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv, halve the resolution, then batch norm and ReLU: pooling first gives the same
    function class as pooling last at a quarter of the normalisation's work."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def cnn(n_out: int = 1, width: int = 16) -> nn.Sequential:
    """A small CNN: three conv blocks (28 -> 14 -> 7 -> 3 pixels, width/2x/4x channels), one
    linear head. Batch norm wants mixed batches: train it with train.shuffle: true."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        _conv_block(1, width),
        _conv_block(width, 2 * width),
        _conv_block(2 * width, 4 * width),
        nn.Flatten(),
        nn.Linear(4 * width * 3 * 3, n_out),
    )


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model (seed torch before calling for reproducible weights)."""
    if spec.model == "linear":
        return Linear1(spec.n_out, spec.init_std)
    if spec.model == "simple_net":
        return simple_net(spec.hidden, spec.n_out)
    if spec.model == "cnn":
        return cnn(spec.n_out, spec.width)
    raise UserError(f"unknown model {spec.model!r}; allowed: linear, simple_net, cnn")


def mnist_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The book's loss: sigmoid, then how far each prediction is from its 0/1 target."""
    predictions = predictions.sigmoid()
    return torch.where(targets == 1, 1 - predictions, predictions).mean()


def batch_accuracy(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """The book's accuracy for one logit per image: sigmoid > 0.5 means the positive digit."""
    preds = xb.sigmoid()
    correct = (preds > 0.5) == yb
    return correct.float().mean()


def loss_func(
    name: str, label_smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss by its params name."""
    if name == "mnist_loss":
        return mnist_loss
    return partial(F.cross_entropy, label_smoothing=label_smoothing)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, bs: int = 4096) -> torch.Tensor:
    """Logits for every row of x, in batches of bs, in eval mode."""
    model.eval()
    return torch.cat([model(x[i : i + bs]) for i in range(0, len(x), bs)])


def predict_classes(logits: torch.Tensor) -> torch.Tensor:
    """Class index per image: for one logit, 0 (the positive digit) when its sigmoid > 0.5, as
    batch_accuracy says (in float32 a logit under about 9e-8 has a sigmoid of 0.5: the other)."""
    if logits.shape[1] == 1:
        return (logits[:, 0].sigmoid() <= 0.5).long()
    return logits.argmax(1)


def targets_for(spec: ModelSpec, classes: torch.Tensor) -> torch.Tensor:
    """Loss targets from class indices: the book's 1/0 column, or the class index itself."""
    if spec.loss_func == "mnist_loss":
        return (classes == 0).float().unsqueeze(1)
    return classes


def save_tensors(tensors: dict[str, torch.Tensor], spec: ModelSpec, path: Path) -> None:
    """Tensors as safetensors (no pickle, the same bytes per seed), the spec as JSON metadata: the
    model's weights, and its valid logits for the evaluate stage, which needs no torch."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # bytes written by Python: a full disk is an OSError (one line), not a SafetensorError
    atomic.write_bytes(path, save(tensors, {"spec": json.dumps(asdict(spec), sort_keys=True)}))


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model from its safetensors file (spec from the metadata)."""
    tensors, meta = atomic.read_safetensors(path, "a model", "train")
    if "spec" not in meta:
        raise BadFile(path, "not a model written by the train stage (no spec metadata)")
    try:
        raw = json.loads(meta["spec"])
        if set(raw) != {f.name for f in fields(ModelSpec)}:
            raise KeyError(f"fields {sorted(raw)}")
        # the bounds of params.yaml: a spec of a million hidden units would cost gigabytes
        train = {k: v for k, v in raw.items() if k != "digits"}
        validate({"data": {"digits": raw["digits"]}, "train": train})
        spec = ModelSpec(**{**raw, "digits": tuple(raw["digits"])})
    except (UserError, ValueError, TypeError, KeyError) as e:
        why = str(e).removeprefix("params.yaml: ")
        raise BadFile(path, f"its spec metadata is not this version's ({why})") from None
    model = build_model(spec)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise BadFile(path, f"weights do not fit its spec ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), spec
