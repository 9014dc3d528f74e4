"""Stage baseline: pixel similarity (ideal digits, L1 and RMSE) -> metrics/baseline.json and
plots/baseline/ideal_digits.png."""

from pathlib import Path

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics import numerics
from mnist_basics.stage import run_stage

TENSORS, METRICS, PLOTS = (
    Path("data/tensors"),
    Path("metrics/baseline.json"),
    Path("plots/baseline/ideal_digits.png"),
)


def main(p) -> None:
    numerics.pin_env(1)  # before torch: the same bytes on any CPU
    from mnist_basics.baseline import run_baseline  # torch: only once params are good

    run_baseline(TENSORS, METRICS, PLOTS)


if __name__ == "__main__":
    run_stage("baseline", main, outputs=[METRICS, PLOTS])
