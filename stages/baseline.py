"""Stage baseline: pixel similarity (ideal digits, L1 and RMSE) -> metrics/baseline.json."""

import logging
from pathlib import Path

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics.cli import run_stage


def main(params: dict) -> None:
    from mnist_basics.baseline import run_baseline  # torch: only once params are good

    m = run_baseline(Path("data/tensors"), Path("metrics/baseline.json"), Path("plots/baseline"))
    logging.getLogger("mnist_basics").info(
        "L1: accuracy %.4f, per digit %s; RMSE: accuracy %.4f",
        m["l1"]["accuracy"],
        m["l1"]["per_digit"],
        m["rmse"]["accuracy"],
    )


if __name__ == "__main__":
    run_stage("baseline", (), main)
