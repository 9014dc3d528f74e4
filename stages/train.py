"""Stage train: data/tensors -> models/model.safetensors, metrics/train (dvclive), plots/train."""

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics.cli import run_stage


def main(params: dict) -> None:
    from mnist_basics.train import train  # torch: only once params are good

    train(params)


if __name__ == "__main__":
    run_stage("train", ("data", "train"), main)
