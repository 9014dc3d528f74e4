"""The whole pipeline under real dvc and git, on a small synthetic source."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from dvc_fixtures import DvcProject, make_project
from safetensors import safe_open

pytestmark = pytest.mark.e2e

STAGES = ("download", "tensorize", "baseline", "train", "evaluate")


def ran(output: str) -> list[str]:
    """Stages that dvc says it ran."""
    return [s for s in STAGES if f"Running stage '{s}'" in output]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path) -> DvcProject:
    """A project that has run `dvc repro` once and committed its lock and metrics."""
    proj = make_project(tmp_path_factory.mktemp("e2e") / "repo", [str(synthetic_37)], [3, 7])
    r = proj.dvc("repro")
    assert ran(r.stdout + r.stderr) == list(STAGES)
    proj.commit("first run")
    return proj


def test_repro_writes_sane_metrics(pipeline: DvcProject) -> None:
    base = pipeline.json("metrics/baseline.json")
    ev = pipeline.json("metrics/evaluate.json")
    tr = pipeline.json("metrics/train/metrics.json")
    assert base["n_valid"] == 24 and 0.5 <= base["l1"]["accuracy"] <= 1
    assert set(base["l1"]["per_digit"]) == {"3", "7"}
    assert ev["n_images"] == 24 and 0.5 <= ev["accuracy"] <= 1
    assert set(ev["per_digit"]) == {"3", "7"} and ev["loss"] >= 0
    assert tr["step"] == 20 and 0 <= tr["valid"]["accuracy"] <= 1
    assert len(json.loads((pipeline.path / "metrics/evaluate/confusion.json").read_text())) == 24
    for png in (
        "plots/baseline/ideal_digits.png",
        "plots/train/weights.png",
        "plots/evaluate/misclassified.png",
    ):
        assert (pipeline.path / png).read_bytes()[:4] == b"\x89PNG"
    shown = pipeline.dvc("metrics", "show", "--json").stdout
    assert '"accuracy"' in shown


def test_the_report_leads_with_charts_on_whole_epochs(pipeline: DvcProject) -> None:
    """`dvc plots show`: the curves and the confusion matrix first, then one picture each; the
    curves' x axis (.dvc/plots/epochs.json) ticks whole epochs, never 2.5."""
    plots = json.loads(pipeline.dvc("plots", "show", "--json").stdout)["data"]
    kinds = [v[0]["type"] for v in plots.values()]
    assert kinds == ["vega"] * 3 + ["image"] * 3, list(plots)
    for name in ("Loss", "Accuracy"):
        x = plots[name][0]["content"]["encoding"]["x"]
        assert x["title"] == "epoch" and x["axis"] == {"tickMinStep": 1, "format": "d"}, x


def test_metrics_are_in_git_not_in_the_cache(pipeline: DvcProject) -> None:
    tracked = pipeline.git("ls-files").stdout.split()
    for f in (
        "dvc.lock",
        "metrics/baseline.json",
        "metrics/evaluate.json",
        "metrics/train/metrics.json",
        "metrics/evaluate/confusion.json",
    ):
        assert f in tracked
    assert "models/model.safetensors" not in tracked  # in DVC's cache instead


def test_second_repro_runs_nothing(pipeline: DvcProject) -> None:
    r = pipeline.dvc("repro")
    assert ran(r.stdout + r.stderr) == []
    assert "up to date" in pipeline.dvc("status").stdout


def test_exp_run_reruns_only_train_and_evaluate_with_its_own_metrics(pipeline: DvcProject) -> None:
    r = pipeline.dvc("exp", "run", "-n", "two-epochs", "-S", "train.epochs=2")
    assert ran(r.stdout + r.stderr) == ["train", "evaluate"]
    rows = json.loads(pipeline.dvc("exp", "show", "--json").stdout)
    exps = {
        e["name"]: e for row in rows for e in row.get("experiments") or [] for e in [e["revs"][0]]
    }
    assert "two-epochs" in exps
    data = exps["two-epochs"]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
    assert data["metrics"]["metrics/train/metrics.json"]["data"]["step"] == 2
    assert "accuracy" in data["metrics"]["metrics/evaluate.json"]["data"]
    pipeline.git("checkout", "--", ".")
    pipeline.dvc("checkout", "-q")


def test_three_digits_run_the_whole_pipeline_with_softmax(
    dvc_project_factory, synthetic_three: Path
) -> None:
    proj = dvc_project_factory(
        [str(synthetic_three)], [1, 4, 8], model="simple_net", epochs=5, loss_func="cross_entropy"
    )
    r = proj.dvc("repro")
    assert ran(r.stdout + r.stderr) == list(STAGES)
    with zipfile.ZipFile(proj.path / "data/raw.zip") as zf:
        assert "mnist_148/valid/4/" in {n.rsplit("/", 1)[0] + "/" for n in zf.namelist()}
    base, ev = proj.json("metrics/baseline.json"), proj.json("metrics/evaluate.json")
    assert set(base["l1"]["per_digit"]) == set(ev["per_digit"]) == {"1", "4", "8"}
    assert ev["n_images"] == 36
    rows = json.loads((proj.path / "metrics/evaluate/confusion.json").read_text())
    assert {r["actual"] for r in rows} == {"1", "4", "8"}
    with safe_open(str(proj.path / "models/model.safetensors"), framework="np") as f:
        assert json.loads(f.metadata()["spec"])["loss_func"] == "cross_entropy"
