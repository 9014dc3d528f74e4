"""Experiments shared between people: a bare git `origin` and an S3 DVC remote.

A commits the pipeline's results and pushes them (git to origin, data to S3). Clone A runs
`dvc exp run -n mine -S train.epochs=2` and `dvc exp push origin mine`. Clone B, a fresh
`git clone`, sees it in `dvc exp list origin`, pulls it, and `dvc exp show --json` and
`dvc plots diff` show its metrics and curves without running anything; `dvc exp apply mine` then
`dvc checkout` gives B the model bytes A trained, from the S3 remote. Credentials only in each
clone's environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvc_fixtures import DvcProject
from remote_servers import Remote, s3_remote  # noqa: F401  (fixture)
from share_fixtures import clone, copy_project, out, ran, reproduced, with_origin  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.remote]


def test_exp_push_in_one_clone_exp_pull_in_another(
    reproduced: DvcProject,  # noqa: F811
    s3_remote: Remote,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The team's repo: results committed, pushed to origin, data in S3 (creds from the env).
    lead = copy_project(reproduced, tmp_path / "lead" / "repo")
    lead.env.update(s3_remote.env)
    s3_remote.add(lead, local=False)
    lead.commit("DVC remote s3")
    origin = with_origin(lead, tmp_path / "origin.git")
    lead.dvc("push", timeout=180)
    baseline = lead.git("rev-parse", "HEAD").stdout.strip()

    # A: clone, pull the data, run and push an experiment.
    a = clone(origin, tmp_path / "a" / "repo", dict(lead.env))
    a.dvc("pull", timeout=180)
    r = a.dvc("exp", "run", "-n", "mine", "-S", "train.epochs=2")
    assert ran(out(r)) == ["train", "evaluate"], out(r)
    r = a.dvc("exp", "push", "origin", "mine", timeout=180)
    assert "mine" in out(r), out(r)
    model = (a.path / "models" / "model.safetensors").read_bytes()
    a_metrics = json.loads((a.path / "metrics" / "evaluate.json").read_text())

    # B: a fresh clone sees A's experiment on origin and pulls it, git refs and data.
    b = clone(origin, tmp_path / "b" / "repo", dict(lead.env))
    listed = b.dvc("exp", "list", "origin", "--name-only", timeout=120).stdout.split()
    assert listed == ["mine"], listed
    b.dvc("exp", "pull", "origin", "mine", timeout=180)
    rows = json.loads(b.dvc("exp", "show", "--json", timeout=120).stdout)
    exps = {e["name"]: e["revs"][0]["data"] for row in rows for e in row.get("experiments") or []}
    assert set(exps) == {"mine"}, exps
    mine = exps["mine"]
    assert mine["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
    assert mine["metrics"]["metrics/evaluate.json"]["data"] == a_metrics
    assert mine["metrics"]["metrics/train/metrics.json"]["data"]["step"] == 2

    plots = json.loads(b.dvc("plots", "diff", baseline, "mine", "--json").stdout)["data"]
    acc = plots["Accuracy"][0]["content"]["data"]["values"]
    assert len([row for row in acc if row["rev"] == "mine"]) == 2  # two epochs
    assert len([row for row in acc if row["rev"] == baseline]) == 20  # the committed run
    # Nothing ran in B: it never had the data the stages read.
    assert not (b.path / "data" / "tensors").exists()
    assert not (b.path / "models" / "model.safetensors").exists()

    b.dvc("exp", "apply", "mine")
    b.dvc("checkout", "train", timeout=180)
    assert (b.path / "models" / "model.safetensors").read_bytes() == model
    assert json.loads((b.path / "metrics" / "evaluate.json").read_text()) == a_metrics
    r = b.git("grep", "-F", "-l", s3_remote.secrets[0], *b.git("rev-list", "--all").stdout.split(),
              check=False)  # fmt: skip
    assert r.returncode == 1, r.stdout
