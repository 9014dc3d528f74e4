"""This machine against the golden bytes (tests/golden/bytes.json): every model and kernel hash of
this CPU kind's record, and, on every CPU, the models the docs promise identical across kinds.
A model that differs names the kernels that differ; a kind with no record skips, printing the
hashes to record (`python tests/golden.py record`)."""

from __future__ import annotations

import json
from pathlib import Path

import golden
import pytest

pytestmark = pytest.mark.realdata
KIND = golden.cpu_kind()


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(golden.GOLDEN.read_text())


@pytest.fixture(scope="module")
def tensors(real_37_tensors: Path, real_10_tensors: Path) -> dict[str, Path]:
    return {"37": real_37_tensors, "10": real_10_tensors}


@pytest.fixture(scope="module")
def trained(tensors: dict[str, Path]):
    """Each run's hash here, trained once per module."""
    cache: dict[tuple[str, str], str] = {}

    def get(run: str, kernels: str) -> str:
        if (run, kernels) not in cache:
            data = tensors["10" if golden.RUNS[run][0] == golden.TEN else "37"]
            cache[run, kernels] = golden.train_hash(run, kernels, data)
        return cache[run, kernels]

    return get


@pytest.fixture(scope="module")
def kernels_here():
    cache: dict[str, dict[str, str]] = {}
    return lambda kernels: cache.setdefault(kernels, golden.fingerprints(kernels))


def differing(here: dict[str, str], kind: dict, kernels: str) -> list[str]:
    theirs = kind.get(kernels, {}).get("kernels", {})
    return [op for op, h in here.items() if op in theirs and theirs[op] != h]


@pytest.mark.parametrize("kernels", list(golden.THREADS))
def test_kernels_match_this_kinds_record(record: dict, kernels_here, kernels: str) -> None:
    here = kernels_here(kernels)
    mine = record["kinds"].get(KIND, {}).get(kernels, {}).get("kernels")
    if mine is None:
        pytest.skip(f"no {kernels} kernel record for {KIND}; here: {json.dumps(here)}")
    assert here == mine, (
        f"{KIND} kernels differ from the record: {differing(here, record['kinds'][KIND], kernels)}"
    )


@pytest.mark.parametrize("kernels", list(golden.THREADS))
@pytest.mark.parametrize("run", list(golden.RUNS))
def test_model_matches_this_kinds_record(
    record: dict, trained, kernels_here, run: str, kernels: str
) -> None:
    expected = record["kinds"].get(KIND, {}).get(kernels, {}).get("models", {}).get(run)
    here = trained(run, kernels)
    if expected is None:
        others = {
            kind: differing(kernels_here(kernels), rec, kernels)
            for kind, rec in record["kinds"].items()
        }
        pytest.skip(
            f"no record of {run} ({kernels}) for {KIND}: here {here}; "
            f"`python tests/golden.py record` adds it; kernels that differ from each recorded "
            f"kind's: {others}"
        )
    diff = differing(kernels_here(kernels), record["kinds"][KIND], kernels)
    assert here == expected, (
        f"{run} ({kernels}) on {KIND}: {here}, recorded {expected}; kernels that differ: "
        f"{diff or 'none, so the code changed: re-record with `python tests/golden.py record`'}"
    )


@pytest.mark.parametrize(
    ("kernels", "run"),
    [tuple(x) for x in json.loads(golden.GOLDEN.read_text())["same_on_every_cpu"]],
)
def test_promised_the_same_on_every_cpu(record: dict, trained, kernels: str, run: str) -> None:
    """What docs/reproducibility.md promises across CPU kinds: every kind recorded the same
    hash, and this machine, whatever its kind, gives it."""
    recorded = {
        kind: rec[kernels]["models"][run]
        for kind, rec in record["kinds"].items()
        if run in rec.get(kernels, {}).get("models", {})
    }
    assert len(recorded) >= 2, (
        f"{run} ({kernels}) is promised across kinds but recorded on {list(recorded)}"
    )
    assert len(set(recorded.values())) == 1, recorded
    assert trained(run, kernels) == next(iter(recorded.values()))
