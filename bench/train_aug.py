"""Train the ten-digit models of README's recipes, with and without augmentation, as the
pipeline's train stage does (its own `mnist_basics.train.train`, the same params and seed), for
`bench/font_digits.py` and the serve page.

    python bench/train_aug.py --mnist ../shared/data/mnist --out /tmp/use-models cnn cnn_aug mlp

Each name writes <out>/<name>.safetensors (and <name>.json: the last epoch's figures).
The runs behind README-use.md are in bench/train_aug_results.json (wall times on a loaded
2-core machine shared with other jobs: the plain CNN took 1417 s there, ~100 s alone). The
augmented runs swap the stage's Learner for one whose calc_grad sees `augment(xb)`: the hook the
pipeline's `train.augment` param wires (README-use.md). The ten digits are downloaded from the
local IDX copy and tensorized once into <out>/data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnist_basics import train as train_mod  # noqa: E402
from mnist_basics.augment import augment  # noqa: E402
from mnist_basics.learner import Learner  # noqa: E402

TEN = list(range(10))
# README's recipes (Recipes table): ten-digit CNN and MLP.
RECIPES: dict[str, dict] = {
    "cnn": dict(
        model="cnn", optimizer="adam", lr=0.01, epochs=6, shuffle=True, schedule="one_cycle"
    ),
    "mlp": dict(
        model="simple_net", hidden=256, optimizer="adam", lr=0.001, shuffle=True, epochs=20
    ),
    "linear": dict(init_std=0.01, optimizer="adam", lr=0.001, shuffle=True),
}
AUGMENT = dict(max_shift=2, max_rotate=12.0, seed=1)


@dataclass
class AugmentedLearner(Learner):
    """The stage's Learner with `augment` applied to every training batch before calc_grad."""

    max_shift: int = 2
    max_rotate: float = 12.0
    aug_generator: torch.Generator | None = None

    def calc_grad(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        xb = augment(xb, self.aug_generator, self.max_shift, self.max_rotate)
        return super().calc_grad(xb, yb)


def tensors(mnist: Path, out: Path) -> Path:
    from mnist_basics.download import download
    from mnist_basics.tensorize import tensorize

    t = out / "data" / "tensors"
    if not (t / "valid.safetensors").exists():
        download(TEN, [str(mnist)], 10, out / "data" / "raw.zip")
        tensorize(out / "data" / "raw.zip", t)
    return t


def run(name: str, tens: Path, out: Path) -> dict:
    base = name.removesuffix("_aug")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["digits"] = TEN
    p["train"].update(RECIPES[base])
    p["train"]["device"] = "cpu"
    work = out / name
    paths = train_mod.Paths(
        tensors=tens,
        model=out / f"{name}.safetensors",
        live=work / "live",
        plots=work / "plots",
        logits=work / "valid_logits.safetensors",
    )
    original = train_mod.Learner
    if name.endswith("_aug"):
        gen = torch.Generator().manual_seed(AUGMENT["seed"])

        def learner(**kw):
            return AugmentedLearner(
                **kw,
                max_shift=AUGMENT["max_shift"],
                max_rotate=AUGMENT["max_rotate"],
                aug_generator=gen,
            )

        train_mod.Learner = learner
    t0 = time.perf_counter()
    try:
        history = train_mod.train(p, paths)
    finally:
        train_mod.Learner = original
    last = history[-1]
    result = {
        "name": name,
        "train": p["train"],
        "augment": AUGMENT if name.endswith("_aug") else None,
        "valid_accuracy": last.valid_accuracy,
        "valid_loss": last.valid_loss,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", choices=[*RECIPES, *(f"{r}_aug" for r in RECIPES)])
    ap.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    ap.add_argument("--out", type=Path, default=Path("/tmp/use-models"))
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    tens = tensors(args.mnist, args.out)
    for name in args.names:
        run(name, tens, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
