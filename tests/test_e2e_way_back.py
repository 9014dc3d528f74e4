"""README's way back to the last commit, after a ten-digit run, under real dvc and git: the
workspace is the commit's again, with no file left over and nothing for DVC to run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dvc_fixtures import ROOT
from synthetic import write_fastai_tree

pytestmark = pytest.mark.e2e

TEN = list(range(10))


def way_back() -> str:
    """README's command, as README gives it (so the test runs exactly what people read)."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"Back to your last commit[^\n]*\n\n```bash\n([^\n]+)\n```", readme)
    assert m, "README has no 'Back to your last commit ...' and its command"
    return m.group(1)


def test_way_back_after_a_ten_digit_experiment_leaves_nothing_behind(
    dvc_project_factory, tmp_path: Path
) -> None:
    ten = tmp_path / "ten"
    write_fastai_tree(ten, TEN, n_train=20, n_valid=6)
    proj = dvc_project_factory([str(ten)], [3, 7])
    proj.dvc("repro")
    proj.commit("first run")
    head = proj.git("rev-parse", "HEAD").stdout

    digits = ",".join(map(str, TEN))
    proj.dvc(
        "exp", "run", "-S", f"data.digits=[{digits}]", "-S", "train.loss_func=cross_entropy",
        "-S", "train.epochs=2",
    )  # fmt: skip
    assert set(proj.json("metrics/baseline.json")["l1"]["per_digit"]) == set(map(str, TEN))
    assert proj.git("status", "--porcelain").stdout != ""  # the experiment is in the workspace

    proj.run("bash", "-c", way_back())
    assert proj.git("status", "--porcelain", "--untracked-files=all").stdout == ""
    assert proj.git("rev-parse", "HEAD").stdout == head
    status = proj.dvc("status")
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    assert set(proj.json("metrics/baseline.json")["l1"]["per_digit"]) == {"3", "7"}
