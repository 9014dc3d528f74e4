"""The bytes depend on params only, not on the environment a user brings: the train stage runs as a
subprocess under each kernel setting a user could export, and on one free core, and must write the
same model and curves, byte for byte, for every model and both `train.kernels`. What holds across
CPU kinds is tests/test_golden_bytes.py's: one machine cannot stand in for another."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_basics import params as params_mod

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "plain": {},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten-avx512": {"ATEN_CPU_CAPABILITY": "avx512"},  # unpinned, SIGILL on a CPU without it
    "mkl-sse42": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-cbwr-auto": {"MKL_CBWR": "AUTO"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "omp-2": {"OMP_NUM_THREADS": "2"},
}
OUTPUTS = ("models/model.safetensors", "metrics/train/plots/metrics/train/loss.tsv")


def _stage(project: Path, name: str, env: dict[str, str], taskset: bool = False):
    cmd = [sys.executable, str(ROOT / "stages" / f"{name}.py")]
    if taskset:
        cmd = ["taskset", "-c", "0", *cmd]
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "MKL_", "OMP_"))}
    r = subprocess.run(
        cmd,
        cwd=project,
        env=full | env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    return {rel: hashlib.sha256((project / rel).read_bytes()).hexdigest() for rel in OUTPUTS}


@pytest.fixture(scope="module")
def tensors(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path) -> Path:
    project = tmp_path_factory.mktemp("same_bytes")
    p = params_mod.defaults()
    p["data"]["sources"] = [str(synthetic_37)]
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    for name in ("download", "tensorize"):
        cmd = [sys.executable, str(ROOT / "stages" / f"{name}.py")]
        subprocess.run(cmd, cwd=project, check=True, capture_output=True, timeout=300)
    return project / "data/tensors"


MODELS = {
    "linear": {"epochs": 3},
    "simple_net": {"model": "simple_net", "lr": 0.1, "epochs": 3},
    "cnn": {
        "model": "cnn",
        "optimizer": "adam",
        "lr": 0.01,
        "epochs": 1,
        "shuffle": True,
        "threads": 2,
    },
}


@pytest.mark.parametrize("kernels", ["portable", "native"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_setting_gives_the_same_model_bytes(
    tensors: Path, tmp_path: Path, model: str, kernels: str
):
    shutil.copytree(tensors, tmp_path / "data/tensors")
    p = params_mod.defaults()
    p["train"].update(MODELS[model], kernels=kernels)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    want = _stage(tmp_path, "train", {})
    got = {name: _stage(tmp_path, "train", env) for name, env in SETTINGS.items()}
    got["taskset-c0"] = _stage(tmp_path, "train", {}, taskset=True)
    assert {name: h for name, h in got.items() if h != want} == {}
