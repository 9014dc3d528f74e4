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
    assert_every_tracked_file_is_heads(proj)


def assert_every_tracked_file_is_heads(proj) -> None:
    """Content, not git's stat cache: a stale file can hide behind an index entry."""
    tracked = proj.git("ls-files").stdout.split()
    blobs = dict(
        line.split()[2:4][::-1] for line in proj.git("ls-tree", "-r", "HEAD").stdout.splitlines()
    )
    now = proj.git("hash-object", *tracked).stdout.split()
    assert {f: h for f, h in zip(tracked, now, strict=True) if blobs.get(f) != h} == {}


def test_way_back_after_a_failed_experiment_restores_every_file(
    dvc_project_factory, synthetic_37
) -> None:
    """A good run changes the metrics, a diverging one fails after training: DVC then rewrites
    git's index so that a changed file of HEAD's size looks unchanged; the way back still works."""
    proj = dvc_project_factory([str(synthetic_37)], [3, 7])
    proj.dvc("repro")
    proj.commit("first run")
    proj.dvc("exp", "run", "-S", "train.lr=0.5")
    r = proj.dvc("exp", "run", "-S", "train.model=simple_net", "-S", "train.lr=100", check=False)
    assert r.returncode != 0 and "training diverged" in r.stdout + r.stderr
    proj.run("bash", "-c", way_back())
    assert proj.git("status", "--porcelain", "--untracked-files=all").stdout == ""
    status = proj.dvc("status")
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    assert_every_tracked_file_is_heads(proj)


def test_way_back_keeps_the_users_own_work(dvc_project_factory, synthetic_37) -> None:
    """An edit to a tracked file the run does not write, and an untracked file, survive it; a
    file of the user's inside an output folder is not deleted without asking."""
    proj = dvc_project_factory([str(synthetic_37)], [3, 7])
    proj.dvc("repro")
    (proj.path / "notes.md").write_text("mine\n")
    proj.commit("first run")
    proj.dvc("exp", "run", "-S", "train.lr=0.5")
    (proj.path / "notes.md").write_text("mine, edited\n")
    (proj.path / "todo.txt").write_text("untracked\n")
    stray = proj.path / "data" / "tensors" / "mine.txt"
    stray.write_text("in an output folder\n")
    r = proj.run("bash", "-c", way_back(), check=False)
    assert r.returncode != 0 and stray.read_text() == "in an output folder\n"
    stray.unlink()
    proj.run("bash", "-c", way_back())
    assert (proj.path / "notes.md").read_text() == "mine, edited\n"
    assert (proj.path / "todo.txt").read_text() == "untracked\n"
    assert sorted(proj.git("status", "--porcelain").stdout.splitlines()) == [
        " M notes.md",
        "?? todo.txt",
    ]
    status = proj.dvc("status")
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
