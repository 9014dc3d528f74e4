"""Stage train: data/tensors -> models/, metrics/train (curves), plots/train."""

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics import numerics
from mnist_basics.stage import run_stage

OUTPUTS = (
    "models/model.safetensors",
    "models/valid_logits.safetensors",
    "metrics/train/metrics.json",
    "metrics/train/plots",
    "plots/train",
)


def main(p) -> None:
    numerics.pin_env(p.train.threads, p.train.kernels)  # before torch: the param's kernels
    from mnist_basics.train import train  # torch: only once params are good

    train(p)


if __name__ == "__main__":
    run_stage("train", main, outputs=OUTPUTS)
