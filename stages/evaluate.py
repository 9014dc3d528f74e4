"""Stage evaluate: the model's valid logits -> metrics/evaluate.json, confusion, gallery."""

from pathlib import Path

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics import numerics
from mnist_basics.params import Params
from mnist_basics.stage import run_stage

TENSORS, LOGITS = Path("data/tensors"), Path("models/valid_logits.safetensors")
METRICS, CONFUSION = Path("metrics/evaluate.json"), Path("metrics/evaluate/confusion.json")
PLOTS = Path("plots/evaluate")


def main(p: Params) -> None:
    numerics.pin_numpy()  # before numpy: the same bytes on any CPU
    from mnist_basics.evaluate import evaluate

    evaluate(TENSORS, LOGITS, METRICS, CONFUSION, PLOTS, gallery=p.evaluate.gallery)


if __name__ == "__main__":
    run_stage("evaluate", main, outputs=[METRICS, CONFUSION, PLOTS])
