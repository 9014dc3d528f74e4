"""The train stage's work: params to a Learner, a fitted model, its curves and weights picture,
and its logits for the valid split (what the evaluate stage reads)."""

import json
import logging
import os
from functools import partial
from pathlib import Path

import torch

from mnist_basics import atomic, images, models, numerics
from mnist_basics.augment import augment
from mnist_basics.data import class_targets, load_splits
from mnist_basics.errors import UserError
from mnist_basics.learner import EpochStats, Learner, one_cycle
from mnist_basics.optim import make_optimizer
from mnist_basics.params import Params, Train
from mnist_basics.tensors import digest

log = logging.getLogger("mnist_basics")

TENSORS, LIVE, PLOTS = Path("data/tensors"), Path("metrics/train"), Path("plots/train")
MODEL, LOGITS = Path("models/model.safetensors"), Path("models/valid_logits.safetensors")


def device_for(name: str) -> torch.device:
    """The device params name, or one clear line when this machine has none such."""
    have = ["cpu"]
    if torch.cuda.is_available():
        have += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        have.append("mps")
    if name not in have:
        raise UserError(
            f'params.yaml: train.device = "{name}" is invalid (not on this machine); '
            f"allowed here: {', '.join(have)}"
        )
    return torch.device(name)


def seed_everything(tp: Train, dev: torch.device) -> torch.Generator:
    """Fix everything the bytes depend on: seeds, CPU kernels and threads, GPU determinism."""
    torch.manual_seed(tp.seed)
    if not numerics.pin_torch(torch, tp.threads, tp.kernels):
        log.warning("torch was imported before numerics.pin_env: the kernels are not the param's")
    if dev.type == "cuda":
        # cuBLAS reproducible only with a fixed workspace (set before CUDA starts)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(tp.seed)


def augmenter(tp: Train):
    """Random shifts and rotations of the training batches (None when both are 0), from their own
    generator, so turning them on leaves the shuffle order as it was."""
    if tp.shift == 0 and tp.rotate == 0:
        return None
    gen = torch.Generator().manual_seed(tp.seed + 1)
    return partial(augment, generator=gen, max_shift=tp.shift, max_rotate=tp.rotate)


def weights_picture(
    model: torch.nn.Module, spec: models.ModelSpec, seed: int
) -> images.Image.Image:
    """The first layer's change from its initial weights (drawn again from the seed), beside it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        start = models.build_model(spec)
    now, start = (
        next(p for n, p in m.named_parameters() if "weight" in n).detach().cpu()
        for m in (model, start)
    )
    one = spec.n_out == 1
    if spec.model == "linear":  # weights [784, n_out]; one logit: red votes for the first digit
        maps, scale = [w.T.reshape(-1, 28, 28) for w in (now, start)], 8 if one else 4
        names = [f"red {spec.digits[0]}, blue {spec.digits[1]}:"] if one else spec.digits
    elif spec.model == "simple_net":  # [hidden, 784]
        maps, scale = [w.reshape(-1, 28, 28)[:18] for w in (now, start)], 4
        names = [f"hidden {i}" for i in range(18)]
    else:  # [width, 1, 3, 3]
        maps, scale = [w[:, 0] for w in (now, start)], 24
        names = [f"conv1 {i}" for i in range(len(maps[0]))]
    tiles, captions = [], []
    for name, w, w0 in zip(names, *maps, strict=False):
        tiles += [images.heat((w - w0).numpy(), scale), images.heat(w.numpy(), scale)]
        captions += [f"{name} learned", f"{name} weights"]  # learned = trained - initial
    return images.labelled_grid(tiles, captions, cols=min(len(tiles), 6))


def train(p: Params) -> list[EpochStats]:
    """Train the model that params describe; write model, logits, curves, weights."""
    tp, digits = p.train, list(p.data.digits)
    dev = device_for(tp.device)
    gen = seed_everything(tp, dev)
    train_split, valid_split = load_splits(TENSORS, dev)
    if sorted(digits) != train_split.digits:
        raise UserError(
            f"params.yaml: data.digits = {digits} but data/tensors holds {train_split.digits}; "
            "run `dvc repro` so download and tensorize follow data.digits"
        )
    spec = models.ModelSpec(tp.model, tuple(digits), tp.loss_func, tp.hidden, tp.init_std, tp.width)
    model = models.build_model(spec).to(dev)
    if tp.kernels == "native":
        model = model.to(memory_format=torch.channels_last)  # oneDNN's fastest convolutions
    learn = Learner(
        model=model,
        train_x=train_split.x,
        train_y=models.targets_for(spec, class_targets(train_split.labels, digits)),
        valid_x=valid_split.x,
        valid_y=models.targets_for(spec, class_targets(valid_split.labels, digits)),
        loss_func=models.loss_func(tp.loss_func, tp.label_smoothing),
        opt=make_optimizer(tp.optimizer, model.parameters(), tp.lr, tp.momentum, tp.weight_decay),
        batch_size=tp.batch_size,
        shuffle=tp.shuffle,
        generator=gen,
        schedule=partial(one_cycle, lr=tp.lr) if tp.schedule == "one_cycle" else None,
        transform=augmenter(tp),
    )
    log.info(
        f"{tp.model}, {tp.loss_func}, {tp.optimizer} optimizer, lr {tp.lr:g}, {tp.epochs} epochs, "
        f"{len(train_split.x)} train / {len(valid_split.x)} valid images on {dev}, "
        f"{tp.threads} thread(s), {tp.kernels} kernels"
    )
    history = learn.fit(tp.epochs)
    logits = models.predict(model, valid_split.x)
    learn.check_saturated(logits)
    with atomic.together():  # the model, its logits, curves and picture: all new, or all old
        with (
            atomic.atomic_path(LIVE / "metrics.json") as summary,
            atomic.atomic_path(LIVE / "plots", is_dir=True) as curves,
        ):  # the folder's two outputs: a file of the user's beside them stays
            write_curves(history, summary, curves)
        picture = images.png_bytes(weights_picture(model, spec, tp.seed))
        with atomic.atomic_path(PLOTS, is_dir=True) as plots_dir:
            (plots_dir / "weights.png").write_bytes(picture)
        valid = torch.tensor(list(digest(TENSORS / "valid.safetensors")), dtype=torch.uint8)
        models.save_tensors({"logits": logits, "valid_sha256": valid}, spec, LOGITS)
        models.save_tensors(model.state_dict(), spec, MODEL)
    return history


def write_curves(history: list[EpochStats], summary_file: Path, plots: Path) -> None:
    """The epochs' figures in dvclive's layout (metrics.json and plots/metrics/) under its folder;
    not by dvclive, which costs more than training."""
    last = history[-1]
    summary = {
        "train": {"loss": last.train_loss},
        "valid": {"loss": last.valid_loss, "accuracy": last.valid_accuracy},
        "step": last.epoch,
    }
    summary_file.write_text(json.dumps(summary, indent=4, allow_nan=False) + "\n")
    for curve in ("train/loss", "valid/loss", "valid/accuracy"):  # EpochStats' train_loss, ...
        tsv = plots / "metrics" / f"{curve}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"step\t{curve.split('/')[1]}"]
        rows += [f"{s.epoch}\t{getattr(s, curve.replace('/', '_'))}" for s in history]
        tsv.write_text("\n".join(rows) + "\n")
