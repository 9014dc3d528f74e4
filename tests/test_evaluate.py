"""The evaluate stage's NumPy metrics are the torch ones the Learner reports, from the logits the
train stage hands over; a missing or foreign logits file is one clear error; and no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

from mnist_basics.errors import UserError
from mnist_basics.evaluate import evaluate, most_confident_mistakes
from mnist_basics.models import (
    ModelSpec,
    batch_accuracy,
    mnist_loss,
    predict_classes,
    save_tensors,
    targets_for,
)
from mnist_basics.tensors import digest


def _valid(tmp: Path, labels: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    tensors = tmp / "tensors"
    tensors.mkdir()
    save_file(
        {"images": images, "labels": labels, "indices": np.arange(len(labels))},
        str(tensors / "valid.safetensors"),
    )
    return tensors


def _digest(tensors: Path) -> torch.Tensor:
    return torch.tensor(list(digest(tensors / "valid.safetensors")), dtype=torch.uint8)


def _run(tmp: Path, tensors: Path, logits: Path, gallery: int = 5) -> dict:
    return evaluate(
        tensors, logits, tmp / "m.json", tmp / "confusion.json", tmp / "gallery", gallery
    )


@pytest.mark.parametrize(
    ("digits", "loss"),
    [((3, 7), "mnist_loss"), ((7, 3), "mnist_loss"), ((1, 4, 8), "cross_entropy")],
)
def test_metrics_are_the_torch_ones(tmp_path: Path, digits: tuple, loss: str) -> None:
    g = torch.Generator().manual_seed(1)
    n = 301
    labels = torch.tensor(digits)[torch.randint(0, len(digits), (n,), generator=g)]
    spec = ModelSpec(model="linear", digits=digits, loss_func=loss)
    logits = torch.randn(n, spec.n_out, generator=g) * 3
    tensors = _valid(tmp_path, labels.numpy())
    logits_file = tmp_path / "logits.safetensors"
    save_tensors({"logits": logits, "valid_sha256": _digest(tensors)}, spec, logits_file)

    m = _run(tmp_path, tensors, tmp_path / "logits.safetensors")

    lut = torch.full((10,), -1)
    lut[list(digits)] = torch.arange(len(digits))
    classes = lut[labels]
    right = predict_classes(logits) == classes
    assert m["accuracy"] == round(right.float().mean().item(), 4)
    if loss == "mnist_loss":  # the book's batch_accuracy agrees with the class rule
        assert m["accuracy"] == round(batch_accuracy(logits, targets_for(spec, classes)).item(), 4)
    torch_loss = mnist_loss if loss == "mnist_loss" else F.cross_entropy
    want_loss = torch_loss(logits, targets_for(spec, classes)).item()
    assert m["loss"] == pytest.approx(want_loss, abs=1e-4)
    assert m["n_images"] == n and m["n_wrong"] == int((~right).sum())
    for k, d in enumerate(digits):
        assert m["per_digit"][str(d)] == round(right[classes == k].float().mean().item(), 4)
    rows = json.loads((tmp_path / "confusion.json").read_text())
    assert [r["actual"] for r in rows] == [str(d) for d in labels.tolist()]
    assert json.loads((tmp_path / "m.json").read_text()) == m
    assert (tmp_path / "gallery" / "misclassified.png").stat().st_size > 0


def test_gallery_takes_the_surest_mistakes_first() -> None:
    logits = np.array([[3.0], [-0.5], [-4.0], [0.2], [-4.0]], np.float32)
    right = np.array([False, False, False, True, False])
    # |logit| orders the confidence; ties keep their order
    assert most_confident_mistakes(logits, right, 3).tolist() == [2, 4, 0]


def test_missing_or_foreign_logits_is_one_clear_error(tmp_path: Path) -> None:
    tensors = _valid(tmp_path, np.array([3, 7, 3]))
    with pytest.raises(UserError, match=r"logits.safetensors: missing; run `dvc repro train`"):
        _run(tmp_path, tensors, tmp_path / "logits.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match=r"junk.safetensors: not a logits file as the train stage"):
        _run(tmp_path, tensors, tmp_path / "junk.safetensors")
    spec = ModelSpec(model="linear", digits=(3, 7), loss_func="mnist_loss")
    five = tmp_path / "five.safetensors"
    save_tensors({"logits": torch.zeros(5, 1), "valid_sha256": _digest(tensors)}, spec, five)
    with pytest.raises(UserError, match=r"logits for 5 images .* holds 3 of digits \[3, 7\]; run"):
        _run(tmp_path, tensors, tmp_path / "five.safetensors")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "gallery").exists()


def test_logits_of_the_valid_images_in_another_order_are_refused(tmp_path: Path) -> None:
    """evaluate pairs logits and images by position: the same images, 7s first, scored a model
    of 0.9676 at 0.0412, with exit 0."""
    labels = np.array([3, 3, 7, 7])
    tensors = _valid(tmp_path, labels)
    spec = ModelSpec(model="linear", digits=(3, 7), loss_func="mnist_loss")
    logits = tmp_path / "logits.safetensors"
    four = torch.tensor([[5.0], [5.0], [-5.0], [-5.0]])
    save_tensors({"logits": four, "valid_sha256": _digest(tensors)}, spec, logits)
    assert _run(tmp_path, tensors, logits)["accuracy"] == 1.0
    shutil.rmtree(tensors)
    _valid(tmp_path, labels[::-1].copy())
    with pytest.raises(UserError, match=r"logits.safetensors: logits of another valid split than"):
        _run(tmp_path, tensors, logits)


def test_evaluate_needs_no_torch() -> None:
    code = "import sys, mnist_basics.evaluate; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ('{"digits": [3, 7]', "Expecting"),  # cut short
        ('{"loss_func": "mnist_loss"}', "no 'digits' in it"),
        ('{"digits": [3, 70], "loss_func": "mnist_loss"}', "digits [3, 70]"),
        ('{"digits": [3, 7], "loss_func": "foo"}', "loss_func 'foo'"),  # was cross-entropy's
        ('{"digits": [3, 7], "loss_func": "cross_entropy"}', "shape [3, 1] for cross_entropy"),
        ('{"digits": [3, 7], "loss_func": "mnist_loss", "x": 1}', None),  # fine
    ],
)
def test_a_garbled_spec_in_the_logits_is_one_clear_error(
    tmp_path: Path, spec: str, words: str | None
) -> None:
    tensors = _valid(tmp_path, np.array([3, 7, 3]))
    logits = tmp_path / "logits.safetensors"
    arrays = {"logits": np.zeros((3, 1), np.float32), "valid_sha256": _digest(tensors).numpy()}
    save_file(arrays, str(logits), metadata={"spec": spec})
    if words is None:
        _run(tmp_path, tensors, logits)
        return
    with pytest.raises(UserError, match=r"not a logits file as the train stage writes it") as e:
        _run(tmp_path, tensors, logits)
    assert words in str(e.value) and "`dvc repro -f train`" in str(e.value)


WRAPPED_STAGE = """
import runpy, sys
from mnist_basics import stage

def _exit(code, line=""):
    from numpy._core._multiarray_umath import __cpu_features__ as found
    print("numpy above baseline:", any(found.get(f) for f in ("X86_V3", "X86_V4")), flush=True)
    real(code, line)

real, stage._exit = stage._exit, _exit
sys.argv = [sys.argv[1]]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python stages/evaluate.py` has it
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_evaluate_stage_runs_numpys_baseline_loops(tmp_path: Path) -> None:
    """NumPy's AVX2 and AVX-512 exp give other last bits than its baseline's (the gallery's order
    follows them): the stage pins NumPy's dispatch, whatever the user's environment says."""
    (tmp_path / "wrapped.py").write_text(WRAPPED_STAGE)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "NPY_ENABLE_CPU_FEATURES": "X86_V3"}
    r = subprocess.run(
        [sys.executable, "wrapped.py", str(root / "stages" / "evaluate.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "numpy above baseline: False" in r.stdout, r.stdout + r.stderr
    assert "evaluate: error: models/valid_logits.safetensors: missing" in r.stderr


def test_logits_of_a_digit_the_valid_split_lacks_are_refused(tmp_path: Path) -> None:
    """Digits [3, 7, 5] against a valid split of 3s and 7s: 5's accuracy was NaN, and writing
    the metrics a traceback."""
    tensors = _valid(tmp_path, np.array([3, 7, 3]))
    logits = tmp_path / "logits.safetensors"
    arrays = {"logits": np.zeros((3, 3), np.float32), "valid_sha256": _digest(tensors).numpy()}
    spec = '{"digits": [3, 7, 5], "loss_func": "cross_entropy"}'
    save_file(arrays, str(logits), metadata={"spec": spec})
    with pytest.raises(UserError, match=r"digits \[3, 7, 5\], but .* holds 3 of digits \[3, 7\]"):
        _run(tmp_path, tensors, logits)
