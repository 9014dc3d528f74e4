"""`mnist-basics sweep`'s grid and failure reasons, without Ray."""

from __future__ import annotations

import argparse

import pytest

from mnist_basics import sweep


def test_grid_expands_as_dvc_exp_run_queue_does() -> None:
    runs = sweep.expand(["train.lr=0.1,0.5,1.0", "train.model=linear,simple_net", "seed.x=3"])
    assert runs == [
        [f"train.lr={lr}", f"train.model={m}", "seed.x=3"]
        for lr in ("0.1", "0.5", "1.0")
        for m in ("linear", "simple_net")
    ]
    assert sweep.expand(["data.digits=[3,7]"]) == [["data.digits=[3,7]"]]  # a list, no sweep
    assert sweep.expand(["other.yaml:a=1,2"]) == [["other.yaml:a=1"], ["other.yaml:a=2"]]
    assert sweep.expand([]) == [[]]
    with pytest.raises(sweep.SweepError):
        sweep.expand(["train.lr=glob(*)"])


def test_reason_is_the_stages_own_error_line() -> None:
    log = (
        "Running stage 'train':\n> python stages/train.py\n"
        "train: error: params.yaml: train.lr = -1 is invalid; allowed: a number > 0\n"
        "ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 2\n"
    )
    assert sweep.reason_of(log).startswith("train: error: params.yaml: train.lr = -1")
    assert sweep.reason_of("x\nERROR: failed to pull data from the cloud\n").startswith("ERROR:")
    assert sweep.reason_of("fatal: repository 'x' does not exist\n").startswith("fatal:")
    assert sweep.reason_of("") == "no output"


def test_arguments() -> None:
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    args = parser.parse_args(["-S", "train.lr=0.1,0.5", "-S", "train.epochs=2", "-n", "lr"])
    assert args.params == ["train.lr=0.1,0.5", "train.epochs=2"]
    assert (args.name, args.address, args.origin, args.num_cpus) == ("lr", None, None, 1.0)
