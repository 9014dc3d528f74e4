"""Stage evaluate: the model's valid logits -> metrics/evaluate.json, confusion, gallery."""

import logging
from pathlib import Path

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics.cli import run_stage


def main(params: dict) -> None:
    from mnist_basics.evaluate import evaluate

    m = evaluate(
        Path("data/tensors"),
        Path("models/valid_logits.safetensors"),
        Path("metrics/evaluate.json"),
        Path("metrics/evaluate/confusion.json"),
        Path("plots/evaluate"),
        gallery=params["evaluate"]["gallery"],
    )
    logging.getLogger("mnist_basics").info(
        "accuracy %.4f on %d valid images (%d wrong), per digit %s",
        m["accuracy"],
        m["n_images"],
        m["n_wrong"],
        m["per_digit"],
    )


if __name__ == "__main__":
    run_stage("evaluate", ("evaluate",), main)
