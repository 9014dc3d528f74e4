"""Train the ten-digit models of README's recipes, with and without augmentation, exactly as the
pipeline's train stage does (`mnist_basics.train.train` on params.yaml plus the recipe), for
`bench/font_digits.py` and the serve page.

    python bench/train_aug.py --mnist ../shared/data/mnist --out /tmp/use-models cnn cnn_aug mlp

Each name trains in <out>/<name>/ (its models/model.safetensors, metrics and plots, as in a
project) and writes <out>/<name>.json (params and the last epoch's figures). `_aug` adds the
recipe's `train.shift=2` and `train.rotate=12`. The ten digits are downloaded from the local IDX
copy and tensorized once into <out>/data/tensors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnist_basics import numerics, params  # noqa: E402

TEN = list(range(10))
NATIVE = dict(kernels="native", threads=2)  # the CNN recipe's kernels, for every run here
RECIPES: dict[str, dict] = {  # README's Recipes table, ten digits
    "cnn": dict(
        model="cnn", optimizer="adam", lr=0.02, epochs=4, shuffle=True, schedule="one_cycle"
    )
    | NATIVE,
    "mlp": dict(model="simple_net", hidden=256, optimizer="adam", lr=0.001, shuffle=True, epochs=20)
    | NATIVE,
}
AUGMENT = dict(shift=2, rotate=12.0)


def tensors(mnist: Path, out: Path) -> Path:
    from mnist_basics.download import download
    from mnist_basics.tensorize import tensorize

    t = out / "data" / "tensors"
    if not (t / "valid.safetensors").exists():
        download(TEN, [str(mnist.resolve())], 10, out / "data" / "raw.zip")
        tensorize(out / "data" / "raw.zip", t)
    return t


def run(name: str, tens: Path, out: Path) -> dict:
    from mnist_basics.train import train

    raw = params.parse((ROOT / "params.yaml").read_text())
    raw["data"]["digits"] = TEN
    raw["train"].update(RECIPES[name.removesuffix("_aug")], loss_func="cross_entropy")
    if name.endswith("_aug"):
        raw["train"].update(AUGMENT)
    p = params.validate(raw)
    work = out / name
    (work / "data").mkdir(parents=True, exist_ok=True)
    if not (work / "data" / "tensors").exists():
        (work / "data" / "tensors").symlink_to(tens.resolve())
    t0 = time.perf_counter()
    os.chdir(work)  # the train stage's paths are relative to a project's root
    last = train(p)[-1]
    result = {
        "name": name,
        "train": dict(vars(p.train)),
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
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    numerics.pin_env(NATIVE["threads"], NATIVE["kernels"])  # before torch, as the stage does
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tens = tensors(args.mnist, out)
    for name in args.names:
        run(name, tens, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
