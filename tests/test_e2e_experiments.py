"""Experiments and comparisons under real dvc and git, on the small synthetic source.

Two temporary repositories:

- `project`: one `dvc repro`, committed; experiments run on top of it: one in the workspace
  (`dvc exp run -S`), a named sweep through the queue (`--queue`, `dvc queue start -j 2`),
  `dvc exp apply`, `dvc exp branch` and the README's `dvc exp show` table.
- `history`: two commits with different params and a local-directory remote; a `git clone`
  of it compares the commits without `dvc pull` (metrics, params and plots diff, the report
  opened in headless Chromium), and a second clone gets everything back with `dvc pull`.

Every command runs under a timeout, and every process a project started (dvc's queue workers
detach) is ended by pid at teardown, so a stuck queue fails the test instead of hanging CI.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from browser import Result, render
from dvc_fixtures import DvcProject, make_project

pytestmark = pytest.mark.e2e

STAGES = ("download", "tensorize", "baseline", "train", "evaluate")
SWEEP_LRS = (0.1, 0.5, 1.0)
QUEUE_DEADLINE = 420  # seconds for the whole sweep; it takes well under a minute when idle

# The README's `dvc exp show`: the columns people compare, best evaluate accuracy first.
EXP_SHOW = (
    "exp",
    "show",
    "--no-pager",
    "--md",
    "--only-changed",
    "--keep",
    r"l1\.accuracy$",
    "--drop",
    r"Created|State|Executor|.*per_digit|.*mean_digit|n_|step|valid\.loss|loss$|rmse"
    r"|data/|models/|src/|stages/",
    "--sort-by",
    "metrics/evaluate.json:accuracy",
    "--sort-order",
    "desc",
)
EXP_SHOW_COLUMNS = [
    "Experiment",
    "l1.accuracy",  # the pixel-similarity baseline (metrics/baseline.json)
    "train.loss",  # the last epoch's (the param is train.loss_func: no clash)
    "valid.accuracy",  # the last epoch's
    "accuracy",  # metrics/evaluate.json
    "train.lr",
    "train.epochs",
]

# Every picture `dvc plots` shows for one revision (dvc.yaml's top-level plots).
IMAGES = (
    "plots/baseline/ideal_digits.png",
    "plots/train/weights.png",
    "plots/evaluate/misclassified.png",
)
VEGA_PLOTS = ("Loss", "Accuracy", "Confusion")


def ran(output: str) -> list[str]:
    """Stages that dvc says it ran."""
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def out(r) -> str:
    return r.stdout + r.stderr


def restore_workspace(proj: DvcProject) -> None:
    """Back to HEAD: git-tracked files from git, cached outputs from DVC's cache."""
    proj.git("checkout", "--", ".")
    proj.dvc("checkout", "-q", "--force", timeout=120)
    assert proj.git("status", "--porcelain").stdout == ""


def experiments(proj: DvcProject) -> dict[str, dict]:
    """`dvc exp show --json`, as {experiment name: {"data": ..., "state": ...}}."""
    rows = json.loads(proj.dvc("exp", "show", "--json", timeout=120).stdout)
    exps = {}
    for row in rows:
        for e in row.get("experiments") or []:
            rev = e["revs"][0]
            state = (e.get("executor") or {}).get("state")
            exps[e["name"]] = {"data": rev["data"], "state": state, "rev": rev["rev"]}
    return exps


def metric(data: dict, path: str) -> dict:
    return data["metrics"][path]["data"]


def train_params(data: dict) -> dict:
    return data["params"]["params.yaml"]["data"]["train"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path):
    """The pipeline run once and committed; its experiment queue is stopped at teardown."""
    proj = make_project(tmp_path_factory.mktemp("exps") / "repo", [str(synthetic_37)], [3, 7])
    try:
        assert ran(out(proj.dvc("repro"))) == list(STAGES)
        proj.commit("first run")
        yield proj
    finally:
        killed = proj.stop_queue()
        assert proj.processes() == [], "processes outlived SIGKILL"
        if killed:
            print(f"teardown killed leftover queue processes: {killed}")


# --- 1. one experiment in the workspace ---------------------------------------------------


def test_exp_run_reruns_train_and_evaluate_and_keeps_its_own_results(
    project: DvcProject,
) -> None:
    try:
        r = project.dvc("exp", "run", "-S", "train.lr=0.1")
        assert ran(out(r)) == ["train", "evaluate"], out(r)
        name = re.search(r"Ran experiment\(s\): (\S+)", out(r)).group(1)

        exp = experiments(project)[name]
        data = exp["data"]
        assert train_params(data)["lr"] == 0.1
        tr = metric(data, "metrics/train/metrics.json")
        ev = metric(data, "metrics/evaluate.json")
        assert tr["step"] == 20 and ev["n_images"] == 24
        assert ev["accuracy"] == round(tr["valid"]["accuracy"], 4)  # the same model, same split

        # Its curves are its own: `dvc plots diff` has rows for this revision, ending where
        # its metrics say; and the workspace holds the same figures after the run.
        plots = json.loads(project.dvc("plots", "diff", "HEAD", name, "--json").stdout)["data"]
        acc = plots["Accuracy"][0]["content"]["data"]["values"]
        mine = [row for row in acc if row["rev"] == name]
        assert len(mine) == 20 and len([row for row in acc if row["rev"] == "HEAD"]) == 20
        assert float(mine[-1]["accuracy"]) == pytest.approx(tr["valid"]["accuracy"])
        assert project.json("metrics/evaluate.json") == ev
        assert project.params()["train"]["lr"] == 0.1
    finally:
        restore_workspace(project)


# --- 2. a named sweep through the queue ----------------------------------------------------


@dataclass
class Sweep:
    names: list[str]
    statuses: dict[str, str]
    seconds: float


def queue_statuses(proj: DvcProject, names: list[str]) -> tuple[dict[str, str], str]:
    """{task name: Queued | Running | Success | Failed} for `names`, from `dvc queue status`."""
    text = proj.dvc("queue", "status", timeout=120).stdout
    statuses = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] in names:
            statuses[parts[1]] = parts[-1]
    return statuses, text


def wait_for_queue(proj: DvcProject, names: list[str], deadline: float) -> dict[str, str]:
    """Poll `dvc queue status` until no task of `names` is Queued or Running."""
    while True:
        statuses, text = queue_statuses(proj, names)
        if len(statuses) == len(names) and not {"Queued", "Running"} & set(statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            logs = "\n".join(
                out(proj.dvc("queue", "logs", n, timeout=60, check=False)) for n in names
            )
            raise AssertionError(f"queue not done in time:\n{text}\n{logs}")
        time.sleep(5)


@pytest.fixture(scope="module")
def sweep(project: DvcProject) -> Sweep:
    """`dvc exp run --queue -n lr -S 'train.lr=0.1,0.5,1.0'`, run by two queue workers."""
    assert project.git("status", "--porcelain").stdout == ""  # the queue snapshots the workspace
    start = time.monotonic()
    r = project.dvc(
        "exp",
        "run",
        "--queue",
        "-n",
        "lr",
        "-S",
        "train.lr=" + ",".join(map(str, SWEEP_LRS)),
        "-S",
        "train.epochs=2",
        timeout=120,
    )
    names = re.findall(r"Queued experiment '([^']+)'", out(r))
    assert names == ["lr-1", "lr-2", "lr-3"], out(r)  # -n with a sweep numbers the names
    r = project.dvc("queue", "start", "-j", "2", timeout=120)
    assert "Started '2' new experiments task queue workers" in out(r), out(r)
    statuses = wait_for_queue(project, names, start + QUEUE_DEADLINE)
    return Sweep(names, statuses, time.monotonic() - start)


def test_queued_sweep_lands_with_its_own_metrics(project: DvcProject, sweep: Sweep) -> None:
    assert sweep.statuses == dict.fromkeys(sweep.names, "Success"), sweep.statuses
    exps = experiments(project)
    losses = {}
    for name, lr in zip(sweep.names, SWEEP_LRS, strict=True):
        exp = exps[name]
        assert exp["state"] == "success", (name, exp["state"])
        data = exp["data"]
        assert train_params(data)["lr"] == lr and train_params(data)["epochs"] == 2
        tr = metric(data, "metrics/train/metrics.json")
        ev = metric(data, "metrics/evaluate.json")
        assert tr["step"] == 2
        assert ev["accuracy"] == round(tr["valid"]["accuracy"], 4)  # its own model evaluated
        losses[name] = tr["train"]["loss"]
    assert len(set(losses.values())) == len(SWEEP_LRS)  # three different trainings
    assert not [n for n, e in exps.items() if e["state"] in ("queued", "running", "failed")]

    # Queued runs start from a temp copy of the git tree with outputs checked out of the
    # cache: data/raw.zip and data/tensors come from the first `dvc repro`, nothing is downloaded.
    for name in sweep.names:
        log = out(project.dvc("queue", "logs", name, timeout=60))
        assert ran(log) == ["train", "evaluate"], log
        assert "Stage 'download' didn't change, skipping" in log, log

    # The workspace is untouched by queued runs; the workers leave once the queue is empty.
    assert project.git("status", "--porcelain").stdout == ""
    assert project.params()["train"]["lr"] == 1.0
    project.dvc("queue", "stop", timeout=60)
    deadline = time.monotonic() + 60
    while project.processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert project.processes() == [], "queue workers still alive after `dvc queue stop`"


def test_queue_snapshots_tracked_and_staged_files_but_not_untracked(project: DvcProject) -> None:
    """What a queued run sees: the git tree plus uncommitted edits and staged new files."""
    staged, untracked = project.path / "staged.txt", project.path / "untracked.txt"
    try:
        staged.write_text("staged\n")
        untracked.write_text("untracked\n")
        project.git("add", "staged.txt")
        project.set_params(evaluate={"gallery": 12})  # edited, not staged
        r = project.dvc("exp", "run", "--queue", "-n", "snapshot", timeout=120)
        assert "Queued experiment 'snapshot'" in out(r), out(r)
        stash = "refs/exps/celery/stash"  # the newest queued task's snapshot
        tree = project.git("ls-tree", "-r", "--name-only", stash).stdout.split()
        assert "staged.txt" in tree and "untracked.txt" not in tree
        params = yaml.safe_load(project.git("show", f"{stash}:params.yaml").stdout)
        assert params["evaluate"]["gallery"] == 12
    finally:
        project.dvc("queue", "remove", "snapshot", timeout=60, check=False)
        project.git("rm", "-q", "--cached", "--ignore-unmatch", "staged.txt")
        staged.unlink(missing_ok=True)
        untracked.unlink(missing_ok=True)
        restore_workspace(project)
    assert "snapshot" not in project.dvc("queue", "status", timeout=120).stdout


# --- 3. apply and branch -----------------------------------------------------------------


def test_exp_apply_and_exp_branch(project: DvcProject, sweep: Sweep) -> None:
    name = sweep.names[1]  # lr 0.5
    data = experiments(project)[name]["data"]
    try:
        project.dvc("exp", "apply", name)
        assert project.params()["train"]["lr"] == 0.5
        assert project.params()["train"]["epochs"] == 2
        assert project.json("metrics/evaluate.json") == metric(data, "metrics/evaluate.json")
        assert project.json("metrics/train/metrics.json") == metric(
            data, "metrics/train/metrics.json"
        )
        assert "up to date" in project.dvc("status").stdout  # the model came with it
    finally:
        restore_workspace(project)

    project.dvc("exp", "branch", name, "lr-half")
    assert "lr-half" in project.git("branch", "--list", "lr-half").stdout
    params = yaml.safe_load(project.git("show", "lr-half:params.yaml").stdout)
    assert params["train"]["lr"] == 0.5
    shown = json.loads(project.git("show", "lr-half:metrics/evaluate.json").stdout)
    assert shown == metric(data, "metrics/evaluate.json")
    assert project.git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip() == "main"


# --- 4. the README's table -----------------------------------------------------------------


def md_table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return cells[0], cells[2:]


def test_readable_exp_show(project: DvcProject, sweep: Sweep) -> None:
    text = project.dvc(*EXP_SHOW, timeout=120).stdout
    header, rows = md_table(text)
    assert header == EXP_SHOW_COLUMNS, text
    col = {h: i for i, h in enumerate(header)}
    by_name = {}
    for row in rows:
        m = re.search(r"\[(\S+)\]$", row[0])
        if m:
            by_name[m.group(1)] = row
    assert set(sweep.names) <= set(by_name), text
    for name, lr in zip(sweep.names, SWEEP_LRS, strict=True):
        assert float(by_name[name][col["train.lr"]]) == lr, text
        assert by_name[name][col["train.epochs"]] == "2", text
        assert float(by_name[name][col["l1.accuracy"]]) > 0.5, text
    exp_rows = [r for r in rows if re.match(r"[├└]", r[0])]
    acc = [float(r[col["accuracy"]]) for r in exp_rows]
    assert acc == sorted(acc, reverse=True), text


# --- 5. comparing commits on a fresh clone, without dvc pull --------------------------------


@dataclass
class History:
    proj: DvcProject
    remote: Path


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path) -> History:
    """Two commits: train.epochs 20 then 2, each reproduced with dvc.lock and metrics in git.

    A local-directory remote is configured (and committed) from the start, as a team would.
    """
    base = tmp_path_factory.mktemp("history")
    proj = make_project(base / "repo", [str(synthetic_37)], [3, 7], epochs=20)
    remote = base / "remote"
    proj.dvc("remote", "add", "-d", "local", str(remote))
    try:
        assert ran(out(proj.dvc("repro"))) == list(STAGES)
        proj.commit("epochs 20")
        proj.set_params(train={"epochs": 2})
        assert ran(out(proj.dvc("repro"))) == ["train", "evaluate"]
        proj.commit("epochs 2")
        yield History(proj, remote)
    finally:
        proj.stop_queue()


def clone(src: DvcProject, dest: Path) -> DvcProject:
    src.git("clone", "-q", str(src.path), str(dest))
    return DvcProject(dest, src.env)


@pytest.fixture(scope="module")
def fresh_clone(history: History, tmp_path_factory: pytest.TempPathFactory) -> DvcProject:
    """A plain `git clone` of the history repo: no cache, no data, no model."""
    c = clone(history.proj, tmp_path_factory.mktemp("clone") / "repo")
    assert not (c.path / "models" / "model.safetensors").exists()
    assert not (c.path / "data" / "tensors").exists()
    return c


def no_cache(proj: DvcProject) -> bool:
    cache = proj.path / ".dvc" / "cache"
    return not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


def test_metrics_and_params_diff_on_a_clone_without_pull(fresh_clone: DvcProject) -> None:
    text = fresh_clone.dvc("metrics", "diff", "HEAD~1").stdout
    assert "metrics/evaluate.json" in text and "metrics/train/metrics.json" in text, text
    assert re.search(r"step\s+20\s+2\s+-18", text), text
    assert re.search(r"\baccuracy\s+\d\.\d+\s+\d\.\d+", text), text
    diff = json.loads(fresh_clone.dvc("metrics", "diff", "HEAD~1", "--json").stdout)
    assert diff["metrics/train/metrics.json"]["step"] == {"old": 20, "new": 2, "diff": -18}
    assert "accuracy" in diff["metrics/evaluate.json"]

    text = fresh_clone.dvc("params", "diff", "HEAD~1").stdout
    assert re.search(r"params\.yaml\s+train\.epochs\s+20\s+2", text), text
    diff = json.loads(fresh_clone.dvc("params", "diff", "HEAD~1", "--json").stdout)
    assert diff == {"params.yaml": {"train.epochs": {"old": 20, "new": 2, "diff": -18}}}
    assert no_cache(fresh_clone)


def assert_report(html: Path, result: Result, revs: int) -> None:
    """No errors offline, one chart per vega plot, every picture of every revision loaded."""
    info = result.summary()
    assert result.errors == [], info
    assert result.external_requests == [], info
    assert len(result.vega_plots) == len(VEGA_PLOTS), info
    assert all(p.charts == 1 for p in result.vega_plots), info
    assert len(result.images) == revs * len(IMAGES), info
    assert all(i.loaded for i in result.images), info
    text = html.read_text(encoding="utf-8")
    for title in VEGA_PLOTS:
        assert f'"{title}"' in text or f"'{title}'" in text, title
    srcs = [i.src for i in result.images]
    for img in IMAGES:
        flat = img.replace("/", "_")
        assert sum(s.endswith(flat) for s in srcs) == revs, (img, srcs)


def test_plots_diff_report_on_a_clone_without_pull(
    fresh_clone: DvcProject, chromium: Path, tmp_path: Path
) -> None:
    report = tmp_path / "diff"
    fresh_clone.dvc("plots", "diff", "HEAD~1", "HEAD", "-o", str(report))
    html = report / "index.html"
    result = render(html)
    assert_report(html, result, revs=2)
    srcs = [i.src for i in result.images]
    assert any("HEAD~1" in s for s in srcs) and any("HEAD_" in s for s in srcs), srcs
    assert no_cache(fresh_clone)


def test_plots_show_renders_in_the_workspace(
    fresh_clone: DvcProject, chromium: Path, tmp_path: Path
) -> None:
    report = tmp_path / "show"
    fresh_clone.dvc("plots", "show", "-o", str(report))
    html = report / "index.html"
    assert_report(html, render(html), revs=1)


# --- 6. sharing through a remote -----------------------------------------------------------


def test_push_then_clone_and_pull_restores_everything(history: History, tmp_path: Path) -> None:
    src = history.proj
    r = src.dvc("push")
    assert re.search(r"\d+ files? pushed", out(r)), out(r)
    assert any(p.is_file() for p in history.remote.rglob("*"))

    c = clone(src, tmp_path / "repo")
    assert "local" in c.dvc("remote", "list").stdout  # the remote came with git
    r = c.dvc("pull")
    assert re.search(r"\d+ files? fetched", out(r)) or "added" in out(r), out(r)

    for rel in (
        "data/raw.zip",
        "data/tensors",
        "models/model.safetensors",
        "metrics/baseline.json",
        "metrics/train/metrics.json",
        "metrics/train/plots",
        "metrics/evaluate.json",
        "metrics/evaluate/confusion.json",
        *IMAGES,
    ):
        a, b = src.path / rel, c.path / rel
        assert b.exists(), rel
        if a.is_dir():
            files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
            assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
            assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files), rel
        else:
            assert a.read_bytes() == b.read_bytes(), rel

    assert "up to date" in c.dvc("status").stdout
    r = c.dvc("repro")
    assert ran(out(r)) == [], out(r)
    assert "Running stage" not in out(r)
