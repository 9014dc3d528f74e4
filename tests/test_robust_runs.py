"""Issue 7, runs: divergence, Ctrl-C and SIGTERM never leave a half-written output, and two runs
give the same bytes. Real stage subprocesses and real `dvc repro` in temp projects."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from dvc_fixtures import DvcProject, make_project
from synthetic import write_fastai_tree

from mnist_basics import params as params_mod
from mnist_basics.parallel import MIN_PARALLEL, workers

ROOT = Path(__file__).resolve().parents[1]
STOP_WITHIN = 2.0  # seconds from the signal to the exit
POOL = workers() >= 2  # the pools run (and must die) only where there are two cores


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) pids of session `sid`: everything a command started in its session."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in "ZX":
            pids.append(int(proc.name))
    return pids


def temporaries(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp"))


def interrupt(
    cmd: list[str],
    cwd: Path,
    ready: Callable[[str, int], bool],
    sig: signal.Signals,
    *,
    group: bool,
    env: dict[str, str] | None = None,
) -> tuple[int, float, str]:
    """Start cmd in its own session; once ready(output, n_processes), send sig (to the whole
    process group when `group`, as a terminal's Ctrl-C does). Returns exit code, seconds from
    the signal to the end of the last process of the session, and the output."""
    log = cwd / f".interrupt-{sig.name}.log"
    with log.open("w") as out:
        p = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not ready(log.read_text(), len(session_processes(p.pid))):
            assert p.poll() is None, f"ended before it was interrupted:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        t0 = time.monotonic()
        if group:
            os.killpg(p.pid, sig)
        else:
            os.kill(p.pid, sig)
        rc = p.wait(30)
        # The whole session must end, not only its leader (dvc dies at once on SIGTERM).
        while session_processes(p.pid) and time.monotonic() - t0 < 30:
            time.sleep(0.02)
        took = time.monotonic() - t0
        left = {q: Path(f"/proc/{q}/cmdline").read_bytes() for q in session_processes(p.pid)}
        assert left == {}, "processes left behind"
    finally:
        for pid in session_processes(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
    text = log.read_text()
    log.unlink()
    return rc, took, text


def stage(project: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{name}.py")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


# --- download and tensorize, with their worker pools -------------------------------------------


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough synthetic PNGs that download and tensorize use their process pools."""
    root = tmp_path_factory.mktemp("big_source")
    n = MIN_PARALLEL // 2 + 100
    write_fastai_tree(root, [3, 7], n_train=n, n_valid=12)
    return root


@pytest.fixture(scope="module")
def big_project(tmp_path_factory: pytest.TempPathFactory, big_source: Path) -> Path:
    project = tmp_path_factory.mktemp("big_project")
    p = params_mod.defaults()
    p["data"]["sources"] = [str(big_source)]
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    return project


def _pool_busy(want_tmp: Path | None = None) -> Callable[[str, int], bool]:
    """Ready when the stage is mid-work: its pool workers are up (and its temp folder exists)."""

    def ready(output: str, n: int) -> bool:
        started = want_tmp is None or bool(list(want_tmp.parent.glob(f".{want_tmp.name}.*.tmp")))
        return started and n >= (3 if POOL else 1)

    return ready


def _assert_interrupted(rc: int, took: float, output: str, name: str) -> None:
    assert rc == 130, output
    assert took < STOP_WITHIN, f"took {took:.2f} s to stop:\n{output}"
    assert "Traceback" not in output, output
    assert f"{name}: interrupted; no partial output was left" in output


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_download_stops_at_once_and_leaves_nothing(
    big_project: Path, sig: signal.Signals, group: bool
) -> None:
    cmd = [sys.executable, str(ROOT / "stages/download.py")]
    rc, took, out = interrupt(
        cmd, big_project, _pool_busy(big_project / "data/raw.zip"), sig, group=group
    )
    _assert_interrupted(rc, took, out, "download")
    assert not (big_project / "data/raw.zip").exists() and temporaries(big_project) == []


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_tensorize_stops_at_once_and_leaves_nothing(
    big_project: Path, sig: signal.Signals, group: bool
) -> None:
    if not (big_project / "data/raw.zip").exists():
        r = stage(big_project, "download")
        assert r.returncode == 0, r.stderr
    cmd = [sys.executable, str(ROOT / "stages/tensorize.py")]
    rc, took, out = interrupt(cmd, big_project, _pool_busy(), sig, group=group)
    _assert_interrupted(rc, took, out, "tensorize")
    assert not (big_project / "data/tensors").exists() and temporaries(big_project) == []


def test_download_and_tensorize_complete_after_interruptions(big_project: Path) -> None:
    for name in ("download", "tensorize"):
        r = stage(big_project, name)
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (big_project / "data/tensors").iterdir()) == [
        "train.safetensors",
        "valid.safetensors",
    ]
    assert temporaries(big_project) == []


SUBPROCESS_STAGE = """
import subprocess, sys
from mnist_basics.cli import run_stage

def main(params):
    print("child started", flush=True)
    subprocess.run([sys.executable, "-c", "import time; time.sleep(120)"], capture_output=True)

run_stage("fake", (), main)
"""


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_a_subprocess_dies_with_its_stage(tmp_path: Path, sig: signal.Signals, group: bool):
    """As the pypi source's `pip download` does: a signal to the stage ends the child too."""
    (tmp_path / "fake.py").write_text(SUBPROCESS_STAGE)
    rc, took, out = interrupt(
        [sys.executable, "fake.py"],
        tmp_path,
        lambda output, n: "child started" in output and n >= 2,
        sig,
        group=group,
    )
    _assert_interrupted(rc, took, out, "fake")


# --- train under dvc: divergence, signals, then a clean repro -----------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path) -> DvcProject:
    return make_project(
        tmp_path_factory.mktemp("robust_runs") / "repo", [str(synthetic_37)], [3, 7]
    )


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ": error:" in ln]


def test_a_diverging_loss_stops_dvc_repro_and_leaves_no_model(project: DvcProject) -> None:
    project.set_params(train={"init_std": 1.0e39})  # weights overflow: the loss is NaN at once
    r = project.dvc("repro", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Traceback" not in out
    errors = _error_lines(out)
    assert errors == [
        "train: error: loss became nan in epoch 1: training diverged; try a lower train.lr than 1.0"
    ], out
    assert not (project.path / "models/model.safetensors").exists()
    assert not (project.path / "metrics/train").exists()
    assert temporaries(project.path) == []


def test_a_diverging_loss_stops_the_train_script(project: DvcProject) -> None:
    r = stage(project.path, "train")  # init_std still 1e39, data/tensors from the repro above
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert _error_lines(r.stderr) == [r.stderr.splitlines()[-1]]
    assert "in epoch 1" in r.stderr and "lower train.lr" in r.stderr
    assert not (project.path / "models/model.safetensors").exists()
    assert not (project.path / "metrics/train/metrics.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_dvc_repro_of_train_stops_at_once(project: DvcProject, sig: signal.Signals) -> None:
    """Ctrl-C (or a SIGTERM to the job) while train runs under dvc repro."""
    project.set_params(train={"init_std": 1.0, "epochs": 100_000})
    dvc = str(Path(sys.executable).parent / "dvc")
    rc, took, out = interrupt(
        [dvc, "repro"],
        project.path,
        lambda output, n: "train: epoch 3/" in output,
        sig,
        group=True,
        env=project.env,
    )
    assert rc != 0 and took < STOP_WITHIN + 1.0, (rc, took, out)  # dvc's own exit included
    assert "train: interrupted; no partial output was left" in out
    assert "Traceback" not in out
    assert not (project.path / "models/model.safetensors").exists()
    assert not (project.path / "metrics/train/metrics.json").exists()
    assert temporaries(project.path) == []


def test_train_script_stops_at_once_on_sigterm(project: DvcProject) -> None:
    rc, took, out = interrupt(
        [sys.executable, str(ROOT / "stages/train.py")],
        project.path,
        lambda output, n: "train: epoch 3/" in output,
        signal.SIGTERM,
        group=False,
    )
    _assert_interrupted(rc, took, out, "train")
    assert not (project.path / "models/model.safetensors").exists()
    assert temporaries(project.path) == []


# --- two forced runs, same bytes -----------------------------------------------------------------


def _outputs(root: Path) -> dict[str, str]:
    files = [
        p
        for top in ("metrics", "models", "plots", "data/tensors")
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    ]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _is_safetensors(path: Path) -> bool:
    """8 bytes of header length, then a JSON header: what safetensors writes, and pickle never."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return 8 + n <= len(data) and isinstance(json.loads(data[8 : 8 + n]), dict)


def test_repro_completes_after_the_interruptions_and_forced_runs_are_byte_identical(
    project: DvcProject,
) -> None:
    project.set_params(train={"init_std": 1.0, "epochs": 3})
    project.dvc("repro")
    project.dvc("repro", "--force")
    first = _outputs(project.path)
    project.dvc("repro", "--force")
    second = _outputs(project.path)
    expected = {
        "metrics/baseline.json",
        "metrics/evaluate.json",
        "metrics/train/metrics.json",
        "metrics/evaluate/confusion.json",
        "metrics/train/plots/metrics/train/loss.tsv",
        "metrics/train/plots/metrics/valid/loss.tsv",
        "metrics/train/plots/metrics/valid/accuracy.tsv",
        "models/model.safetensors",
        "models/valid_logits.safetensors",
        "plots/train/weights.png",
        "plots/evaluate/misclassified.png",
        "plots/baseline/ideal_3.png",
        "plots/baseline/ideal_7.png",
        "data/tensors/train.safetensors",
        "data/tensors/valid.safetensors",
    }
    assert expected <= set(first), sorted(first)
    assert first == second
    for rel in (
        "models/model.safetensors",
        "models/valid_logits.safetensors",
        "data/tensors/train.safetensors",
    ):
        assert _is_safetensors(project.path / rel), rel
    assert temporaries(project.path) == []
