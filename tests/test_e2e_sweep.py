"""`mnist-basics sweep` on a real two-node Ray cluster, a bare git origin and a DVC
remote (a local folder: the S3, WebDAV and SSH servers have their own tests).

A four-run grid, one run refused on purpose (`train.lr=-1`): the sweep, driven as from a laptop
outside the cluster (`--address ray://...`, the Ray client), runs one task per configuration on
both nodes, each in its own clone;
three runs land on the origin (git refs) and the DVC remote (models), the failed one is reported
with the stage's own error line and the exit code is 1. A teammate's fresh clone then pulls the
three with `dvc exp pull` and `dvc exp show` lists them with their params and metrics. A node's own
form of the address (`--address host:port`, the GCS) reaches the same cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dvc_fixtures import DvcProject
from ray_cluster import RayCluster, ray_cluster  # noqa: F401  (fixture)
from share_fixtures import clone, copy_project, reproduced, with_origin  # noqa: F401

from mnist_basics.sweep import Spec, run_one

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

LRS = ("0.1", "0.5", "1.0", "-1")
NAMES = [f"grid-{i}" for i in range(1, len(LRS) + 1)]


def experiments(proj: DvcProject) -> dict[str, dict]:
    """{experiment name: its `dvc exp show --json` data} for the current commit."""
    rows = json.loads(proj.dvc("exp", "show", "--json", timeout=120).stdout)
    return {e["name"]: e["revs"][0]["data"] for row in rows for e in row.get("experiments") or []}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, reproduced: DvcProject):  # noqa: F811
    """The user's repo: pipeline committed, pushed to a bare origin, data in a DVC remote."""
    base = tmp_path_factory.mktemp("sweep")
    proj = copy_project(reproduced, base / "repo")
    store = base / "dvc-store"
    proj.dvc("remote", "add", "-d", "store", str(store))
    proj.commit("DVC remote")
    origin = with_origin(proj, base / "origin.git")
    proj.dvc("push", timeout=180)
    return proj, origin


def test_sweep_on_ray_lands_every_good_run_and_reports_the_bad_one(
    team,
    ray_cluster: RayCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    proj, origin = team
    start = time.monotonic()
    # Through the head's Ray client server: the driver is no node of the cluster.
    r = subprocess.run(
        [
            sys.executable, "-m", "mnist_basics.cli", "sweep",
            "-n", "grid",
            "-S", "train.lr=" + ",".join(LRS),
            "-S", "train.epochs=2",
            "--address", ray_cluster.client,
        ],
        cwd=proj.path, env=proj.env,
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.monotonic() - start
    text = r.stdout + r.stderr
    print(text, f"\nsweep wall time {seconds:.1f} s")
    assert r.returncode == 1, text
    assert re.search(r"^sweep: 4 runs .* Ray cluster of 2 node\(s\), 2 CPU\(s\)$", text, re.M), text

    # Progress as tasks finish, then the summary: every run, the failed one with its cause.
    assert len(re.findall(r"^\[\d/4\] grid-\d (ok|FAILED)", text, re.M)) == 4, text
    assert "3 of 4 runs landed" in text, text
    for name, lr in zip(NAMES, LRS, strict=True):
        state = "FAILED" if lr == "-1" else "ok"
        assert re.search(rf"^  {name}\s+{state}\s.*train\.lr={re.escape(lr)}\b", text, re.M), text
    assert re.search(r"^\s+train: error: params\.yaml: train\.lr = -1\b", text, re.M), text
    # One task per CPU, wherever there was room: both nodes took runs.
    nodes = set(re.findall(r"^\[\d/4\] grid-\d \w+ +[\d.]+ s on (\S+)", text, re.M))
    assert len(nodes) == 2, text
    # The tasks' clones are gone.
    assert list(ray_cluster.tmp.glob("mnist-sweep-*")) == []

    # On the origin: the three experiments' refs, not the failed one's.
    listed = proj.dvc("exp", "list", "origin", "--name-only", timeout=120).stdout.split()
    assert sorted(listed) == NAMES[:3], listed

    # The sweep pulled them into the user's repo already ...
    assert set(NAMES[:3]) <= set(experiments(proj))
    # ... and a teammate gets them from the origin and the DVC remote, without running them.
    mate = clone(origin, tmp_path / "mate" / "repo", proj.env)
    mate.dvc("exp", "pull", "origin", *NAMES[:3], timeout=180)
    exps = experiments(mate)
    assert set(NAMES[:3]) <= set(exps) and NAMES[3] not in exps, sorted(exps)
    losses = set()
    for name, lr in zip(NAMES[:3], LRS[:3], strict=True):
        data = exps[name]
        train = data["params"]["params.yaml"]["data"]["train"]
        assert train["lr"] == float(lr) and train["epochs"] == 2, (name, train)
        tr = data["metrics"]["metrics/train/metrics.json"]["data"]
        ev = data["metrics"]["metrics/evaluate.json"]["data"]
        assert tr["step"] == 2 and ev["n_images"] == 24, (name, tr, ev)
        losses.add(tr["train"]["loss"])
    assert len(losses) == 3  # three different trainings
    assert not (mate.path / "data" / "tensors").exists()  # nothing ran in the teammate's clone


def sweep_from_a_node(proj: DvcProject, cluster: RayCluster, *args: str):
    """`mnist-basics sweep --address host:port`, as on a node of the cluster; the driver too sees
    itself at 127.0.0.1, the nodes' address (see ray_cluster's doc)."""
    return subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "sweep", *args, "--address", cluster.gcs],
        cwd=proj.path, env=dict(proj.env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_sweep_from_a_node_reaches_the_cluster_by_its_gcs_address(
    team,
    ray_cluster: RayCluster,  # noqa: F811
) -> None:
    """`--address host:port`, as on a node of the cluster: one run, refused before it trains."""
    r = sweep_from_a_node(team[0], ray_cluster, "-n", "gcs", "-S", "train.lr=-1")
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert re.search(r"^sweep: 1 runs .* Ray cluster of 2 node\(s\), 2 CPU\(s\)$", text, re.M), text
    assert "0 of 1 runs landed" in text, text
    assert re.search(r"^\s+train: error: params\.yaml: train\.lr = -1\b", text, re.M), text


def test_more_cpus_a_run_than_any_node_has_is_refused_not_queued_for_ever(
    team,
    ray_cluster: RayCluster,  # noqa: F811
) -> None:
    r = sweep_from_a_node(team[0], ray_cluster, "-n", "big", "--num-cpus", "2")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines()[-1] == (
        "sweep: error: --num-cpus 2: no node of the cluster has that many CPUs; allowed: up to 1, "
        "its largest node's"
    )


def test_a_run_whose_name_the_origin_has_is_not_reported_landed(
    team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's `dvc exp push` finds a run of its name on the origin already (a sweep of the
    same name started elsewhere meanwhile): DVC says "No experiments to push" and exits 0."""
    proj, origin = team
    for var, value in proj.env.items():
        monkeypatch.setenv(var, value)
    commit = proj.git("rev-parse", "HEAD").stdout.strip()
    first = run_one(Spec("twice", ["train.epochs=2"], str(origin), commit))
    again = run_one(Spec("twice", ["train.epochs=3"], str(origin), commit))
    assert first.ok, first.reason
    assert not again.ok
    assert again.reason == "dvc exp push: the origin's twice is not this run (it was there already)"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_sweep_cancels_the_runs_in_one_line(
    team,
    ray_cluster: RayCluster,  # noqa: F811
    sig: signal.Signals,
) -> None:
    """Ctrl-C or SIGTERM (a job manager's stop) while a run trains, after another landed: the
    unfinished run is cancelled, the sweep says so (no crash dump of Ray's), names the landed
    one and how to pull it, and exits 130; nothing unfinished lands on the origin."""
    proj, _ = team
    name = f"stop{sig.value}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_basics.cli", "sweep", "-n", name, "-S",
         "train.epochs=1,100000", "--no-pull", "--address", ray_cluster.gcs],
        cwd=proj.path, env=dict(proj.env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("sweep: 2 runs")
        assert proc.stdout.readline().startswith(f"[1/2] {name}-1 ok")  # the other one trains
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert err.splitlines()[-1] == (
        f"sweep: interrupted; unfinished runs cancelled; those that landed: dvc exp pull origin "
        f"{name}-1"
    ), err
    assert "SIGTERM received" not in err
    listed = proj.dvc("exp", "list", "origin", "--name-only", timeout=120).stdout.split()
    assert f"{name}-1" in listed and f"{name}-2" not in listed


def test_a_sigterm_as_ray_starts_is_the_interrupt_line(team, tmp_path: Path) -> None:
    """Ray's start sets a SIGTERM handler of its own (`sys.exit(15)`): a job manager's SIGTERM
    then ended the sweep with exit 15 and no line. The stand-in `ray` does what that does."""
    proj, _ = team
    fake = tmp_path / "fake" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os, signal, subprocess, sys, time\n"
        "def init(**kwargs):\n"
        "    agent = subprocess.Popen(['sleep', '60'])  # as Ray's agents, started by then\n"
        f"    open({str(tmp_path / 'agent')!r}, 'w').write(str(agent.pid))\n"
        "    signal.signal(signal.SIGTERM, lambda *a: sys.exit(15))  # as Ray's own\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    env = dict(proj.env, PYTHONPATH=os.pathsep.join([str(fake.parent), *sys.path]))
    r = subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "sweep", "-n", "term", "-S", "train.epochs=1"],
        cwd=proj.path, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (130, "sweep: interrupted before any run started\n")
    with pytest.raises(ProcessLookupError):  # ended with the sweep, not left for a minute
        os.kill(int((tmp_path / "agent").read_text()), 0)


def test_a_push_that_fails_after_its_ref_landed_says_so(
    team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc exp push` sends the git ref before the data: a remote that takes no data leaves
    the run on the origin without its outputs, which a teammate's pull would miss."""
    proj, _ = team
    for var, value in proj.env.items():
        monkeypatch.setenv(var, value)
    commit = proj.git("rev-parse", "HEAD").stdout.strip()
    origin = proj.git("remote", "get-url", "origin").stdout.strip()
    store = proj.dvc("remote", "list").stdout.split()[1]
    readonly = [["mount", "--bind", store, store], ["mount", "-o", "remount,bind,ro", store]]
    for cmd in readonly:  # the pull reads the remote, the push cannot write to it
        if (r := subprocess.run(cmd, capture_output=True, text=True)).returncode != 0:
            subprocess.run(["umount", store], capture_output=True)
            pytest.skip(f"cannot mount the DVC remote read-only here: {r.stderr.strip()}")
    try:
        o = run_one(Spec("half", ["train.epochs=1", "train.lr=0.3"], origin, commit))  # new data
    finally:
        subprocess.run(["umount", store], check=True)
    assert not o.ok
    assert o.reason.startswith("dvc exp push: "), o.reason
    remove = f"git push {origin} :refs/exps/{commit[:2]}/{commit[2:]}/half"  # the task's origin
    assert o.reason.endswith(f"; its ref is on the origin without all its outputs: {remove}")


def test_sigterm_after_ray_shut_down_is_still_an_interrupt() -> None:
    """The summary and the final `dvc exp pull` come after Ray is shut down: a SIGTERM then
    must still reach the sweep's line, not end the process silently (exit 143)."""
    pytest.importorskip(
        "ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'"
    )
    code = (
        "import os, signal, time, ray\n"
        "from mnist_basics import atomic, sweep\n"
        "ray.init(include_dashboard=False, log_to_driver=False)\n"
        "atomic.handle_signals()\n"
        "sweep._shutdown(ray)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "interrupted\n"), r.stderr
