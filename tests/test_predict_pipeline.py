"""On a real pipeline run (synthetic data): `predict` on the valid PNGs gives the evaluate stage's
predictions, and `--rev` reads a commit's and a DVC experiment's model without a checkout."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dvc_fixtures import DvcProject
from safetensors.numpy import load_file

pytestmark = pytest.mark.e2e


def predict(proj: DvcProject, *args: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "predict", "--json", *args],
        cwd=proj.path,
        env=proj.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_predict_equals_evaluate_and_rev(dvc_project_factory, synthetic_37: Path) -> None:
    proj = dvc_project_factory([str(synthetic_37)], [3, 7])
    proj.dvc("repro")
    proj.commit("first run")
    # the valid PNGs, in the valid split's order (the tensors' labels and MNIST indices)
    t = load_file(str(proj.path / "data/tensors/valid.safetensors"))
    order = list(zip(t["labels"].tolist(), t["indices"].tolist(), strict=True))
    out = proj.path.parent / "valid_pngs"
    with zipfile.ZipFile(proj.path / "data/raw.zip") as zf:
        for d, i in order:
            f = out / f"{d}" / f"{i}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(zf.read(f"mnist_sample/valid/{d}/{i}.png"))
    files = [str(out / f"{d}" / f"{i}.png") for d, i in order]
    # --as-is: the synthetic glyphs are jittered up to 2 px off MNIST's centring, so they are not
    # in MNIST's own form (real MNIST's PNGs are, and are used as they are without the flag)
    doc = predict(proj, "--as-is", *files)
    got = [img["digit"] for img in doc["images"]]
    assert [img["path"] for img in doc["images"]] == files
    assert not any(img["preprocessed"] for img in doc["images"])
    confusion = proj.json("metrics/evaluate/confusion.json")
    assert got == [int(row["predicted"]) for row in confusion]
    logits = load_file(str(proj.path / "models/valid_logits.safetensors"))["logits"][:, 0]
    p3 = [img["probabilities"]["3"] for img in doc["images"]]
    np.testing.assert_allclose(p3, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-5)

    # a DVC experiment, then each model by its revision, without a checkout
    proj.dvc("exp", "run", "-n", "short", "-S", "train.epochs=1", "-S", "train.lr=0.01")
    some = files[:: max(1, len(files) // 6)]
    ws, exp, head = (
        predict(proj, "--as-is", *some),
        predict(proj, "--as-is", "--rev", "short", *some),
        predict(proj, "--as-is", "--rev", "HEAD", *some),
    )
    assert exp["model"]["source"] == "short" and head["model"]["source"] == "HEAD"
    assert exp["images"] == ws["images"]  # the experiment's model is now the workspace's
    first = [img for img in doc["images"] if img["path"] in some]
    # HEAD: the committed first run (up to float rounding: a batch of 6 images, not all)
    assert [p3_of(img) for img in head["images"]] == pytest.approx(
        [p3_of(img) for img in first], abs=1e-6
    )
    assert [img["digit"] for img in head["images"]] == [img["digit"] for img in first]
    assert [p3_of(img) for img in head["images"]] != pytest.approx(
        [p3_of(img) for img in exp["images"]], abs=1e-3
    )


def p3_of(img: dict) -> float:
    return img["probabilities"]["3"]
