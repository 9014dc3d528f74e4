"""Runs that fail lose nothing: a bad param, divergence, Ctrl-C, SIGTERM, kill -9 of a stage or of
dvc, a broken input file. Each case runs real stage subprocesses or real `dvc repro` in a temp
project, snapshots every output before, and checks the same snapshot after."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from dvc_fixtures import DvcProject, in_sessions, make_project
from synthetic import write_fastai_tree

from mnist_basics import params as params_mod

ROOT = Path(__file__).resolve().parents[1]
STOP_WITHIN = 2.0  # seconds from the signal to the exit


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) pids of session `sid`: everything a command started in its session."""
    return in_sessions([sid])


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


# --- download and tensorize ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough synthetic PNGs that download and tensorize take a few seconds."""
    root = tmp_path_factory.mktemp("big_source")
    write_fastai_tree(root, [3, 7], n_train=2500, n_valid=12)
    return root


@pytest.fixture(scope="module")
def big_project(tmp_path_factory: pytest.TempPathFactory, big_source: Path) -> Path:
    project = tmp_path_factory.mktemp("big_project")
    p = params_mod.defaults()
    p["data"]["sources"] = [str(big_source)]
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    return project


def _mid_work(project: Path, name: str) -> Callable[[str, int], bool]:
    """Ready once the stage is at its work: download's temporary folder exists, or tensorize
    has said it is decoding."""
    if name == "download":
        return lambda output, n: bool(list((project / "data").glob(".raw.zip.*.tmp")))
    return lambda output, n: "decoding" in output


def _assert_interrupted(rc: int, took: float, output: str, name: str) -> None:
    assert rc == 130, output
    assert took < STOP_WITHIN, f"took {took:.2f} s to stop:\n{output}"
    assert "Traceback" not in output, output
    assert f"{name}: interrupted; the last good outputs are left as they were" in output


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".interrupt")
    }


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
@pytest.mark.parametrize("name", ["download", "tensorize"])
def test_an_interrupted_stage_stops_at_once_and_keeps_the_last_outputs(
    big_project: Path, name: str, sig: signal.Signals, group: bool
) -> None:
    for needed in ("download", "tensorize"):  # the last good outputs, to be kept
        if needed == "download" and (big_project / "data/raw.zip").exists():
            continue
        r = stage(big_project, needed)
        assert r.returncode == 0, r.stderr
    before = _files(big_project)
    cmd = [sys.executable, str(ROOT / f"stages/{name}.py")]
    rc, took, out = interrupt(cmd, big_project, _mid_work(big_project, name), sig, group=group)
    _assert_interrupted(rc, took, out, name)
    assert _files(big_project) == before and temporaries(big_project) == []


SUBPROCESS_STAGE = """
import subprocess, sys
from mnist_basics.stage import run_stage

def main(params):
    print("child started", flush=True)
    subprocess.run([sys.executable, "-c", "import time; time.sleep(120)"], capture_output=True)

run_stage("fake", main)
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


def test_the_temporaries_of_a_killed_run_are_cleared_by_the_next(big_project: Path) -> None:
    if not (big_project / "data/raw.zip").exists():
        assert stage(big_project, "download").returncode == 0
    rc, _, _ = interrupt(
        [sys.executable, str(ROOT / "stages/tensorize.py")],
        big_project,
        lambda o, n: "decoding" in o,
        signal.SIGKILL,
        group=False,
    )
    assert rc == -9
    stale = big_project / "data/.tensors.0123456789abcdef.tmp"  # as atomic_path names them
    stale.mkdir()
    (stale / "train.safetensors").write_bytes(b"half")
    r = stage(big_project, "tensorize")
    assert r.returncode == 0, r.stderr
    assert temporaries(big_project) == []


# --- train under dvc: failures keep the last good outputs ----------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path) -> DvcProject:
    """A committed project whose every output exists from a good run."""
    proj = make_project(
        tmp_path_factory.mktemp("robust_runs") / "repo", [str(synthetic_37)], [3, 7], epochs=3
    )
    proj.dvc("repro")
    proj.commit("a good run")
    return proj


def outputs(root: Path) -> dict[str, str]:
    files = [
        p
        for top in ("metrics", "models", "plots", "data")
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    ]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def good(project: DvcProject) -> Iterator[dict[str, str]]:
    """The outputs of the good run; after the test, params and outputs back to that run."""
    before = outputs(project.path)
    yield before
    project.git("checkout", "--", ".")
    project.dvc("checkout", "--force")


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ": error:" in ln]


def _changed(project: DvcProject) -> list[str]:
    return project.git("status", "--porcelain").stdout.splitlines()


@pytest.mark.parametrize(
    ("train", "error"),
    [
        ({"lr": -1}, "train: error: params.yaml: train.lr = -1 is invalid"),
        ({"model": "simple_net", "lr": 1e30}, "train: error: loss became"),
        ({"lr": 1e38}, "train: error: weights reached"),
        ({"lr": 1e6}, "train: error: every valid image's sigmoid is saturated"),
    ],
    ids=["bad-param", "nan", "finite-divergence", "one-answer-for-all"],
)
def test_a_failed_repro_keeps_every_output(
    project: DvcProject, good: dict[str, str], train: dict, error: str
) -> None:
    project.set_params(train=train)
    r = project.dvc("repro", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    errors = _error_lines(out)
    assert len(errors) == 1 and errors[0].startswith(error), out
    assert outputs(project.path) == good
    assert _changed(project) == [" M params.yaml"]
    assert temporaries(project.path) == []


def test_a_users_file_in_an_output_folder_stops_the_run_and_stays(
    project: DvcProject, good: dict[str, str]
) -> None:
    """plots/train is replaced whole by each run: a file of the user's in it stops the run, one
    line, before it is lost; beside the outputs, in metrics/train, a file stays."""
    mine = {"metrics/train/NOTES.md": b"my notes", "plots/train/mine.txt": b"mine"}
    for name, data in mine.items():
        (project.path / name).write_bytes(data)
    project.set_params(train={"epochs": 2})
    r = project.dvc("repro", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert _error_lines(out) == [
        "train: error: plots/train/mine.txt: not a file this stage writes, in its output folder "
        "plots/train, which a run replaces whole; move it elsewhere (no output was replaced)"
    ]
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in mine.items()}
    assert outputs(project.path) == {**good, **hashes}
    (project.path / "plots/train/mine.txt").unlink()
    project.dvc("repro")
    assert (project.path / "metrics/train/NOTES.md").read_bytes() == b"my notes"
    (project.path / "metrics/train/NOTES.md").unlink()


def test_python_bytecode_beside_the_code_changes_no_dep(project: DvcProject) -> None:
    """A user's Python writes __pycache__/ into src/ as the stages import it (CI sets
    PYTHONDONTWRITEBYTECODE): dvc.lock must not record it, or `git status` is dirty after
    `dvc repro` on a fresh clone."""
    made = []
    for folder in ("src/mnist_basics", "src/mnist_basics/download", "stages"):
        cache = project.path / folder / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / "x.cpython-311.pyc").write_bytes(b"bytecode")
        made.append(cache)
    try:
        assert "up to date" in project.dvc("status").stdout
    finally:
        for cache in made:
            shutil.rmtree(cache)


def test_a_section_no_stage_reads_is_named_by_the_next_repro(
    project: DvcProject, good: dict[str, str]
) -> None:
    """A typo in a section's name: evaluate depends on the whole file, so it reruns and says so."""
    project.set_params(evalute={"gallery": 10})
    r = project.dvc("repro", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    errors = _error_lines(out)
    assert len(errors) == 1, out
    assert errors[0].startswith("evaluate: error: params.yaml: unknown key evalute"), out
    assert outputs(project.path) == good


def test_a_failed_workspace_exp_run_keeps_every_output(
    project: DvcProject, good: dict[str, str]
) -> None:
    r = project.dvc("exp", "run", "-S", "train.lr=1e38", check=False)
    assert r.returncode != 0 and "train: error: weights reached" in r.stdout + r.stderr
    assert outputs(project.path) == good
    assert _changed(project) == [" M params.yaml"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_repro_keeps_every_output(
    project: DvcProject, good: dict[str, str], sig: signal.Signals
) -> None:
    """Ctrl-C (or a SIGTERM to the job) while train runs under dvc repro."""
    project.set_params(train={"epochs": 100_000})
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
    assert "train: interrupted; the last good outputs are left as they were" in out
    assert "Traceback" not in out
    assert outputs(project.path) == good
    assert _changed(project) == [" M params.yaml"]
    assert temporaries(project.path) == []


def _train_started(sid: int) -> bool:
    return any("stages/train.py" in " ".join(p.cmdline()) for p in _processes(sid))


def _processes(sid: int) -> list[psutil.Process]:
    procs = []
    for pid in session_processes(sid):
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    return procs


@pytest.mark.parametrize("when", ["training", "starting"])
def test_a_stage_whose_dvc_is_killed_stops(
    project: DvcProject, good: dict[str, str], when: str
) -> None:
    """kill -9 of dvc (a closed terminal, a cancelled CI job), in epoch 3 or the moment the stage
    process exists (before it has looked for its parent): it must not train on as an orphan and
    write its outputs later, racing the next run."""
    project.set_params(train={"epochs": 100_000})
    dvc = str(Path(sys.executable).parent / "dvc")
    log = project.path / ".interrupt-orphan.log"
    with log.open("w") as f:
        p = subprocess.Popen(
            [dvc, "repro"],
            cwd=project.path,
            env=project.env,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not (
            "train: epoch 3/" in log.read_text() if when == "training" else _train_started(p.pid)
        ):
            assert p.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        p.kill()
        p.wait(10)
        t0 = time.monotonic()
        while session_processes(p.pid) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        assert session_processes(p.pid) == [], "the stage trains on as an orphan"
    finally:
        for pid in session_processes(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    log.unlink()
    assert "train: interrupted; the last good outputs are left as they were" in text
    assert outputs(project.path) == good
    # dvc's own lock (.dvc/tmp/rwlock) names a dead process: the next repro clears it and runs
    project.git("checkout", "--", "params.yaml")
    project.dvc("repro")


@pytest.mark.parametrize(
    ("victim", "stages"),
    [
        ("data/tensors/train.safetensors", ["baseline", "train"]),
        ("data/tensors/valid.safetensors", ["baseline", "train", "evaluate"]),
        ("models/valid_logits.safetensors", ["evaluate"]),
    ],
)
@pytest.mark.parametrize("damage", ["truncated", "garbled", "huge"])
def test_a_broken_input_file_is_one_clear_line_in_every_stage_that_reads_it(
    project: DvcProject, good: dict[str, str], victim: str, stages: list[str], damage: str
) -> None:
    path = project.path / victim
    data = path.read_bytes()
    path.unlink()  # DVC's cache copy is read-only: never write through it
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * len(data))
    if damage == "huge":  # its header intact, 300 MB (sparse): refused before it is read
        path.write_bytes(data)
        os.truncate(path, 300 << 20)
    for name in stages:
        r = stage(project.path, name)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        errors = _error_lines(r.stderr)
        assert len(errors) == 1 and errors[0].startswith(f"{name}: error: {victim}: "), r.stderr
        assert "writes it again" in errors[0]


def _relabel_all_as_the_first(a: dict) -> dict:
    return {**a, "labels": np.full_like(a["labels"], a["labels"].min())}


WRONG_CONTENT = {
    "shape": lambda a: {**a, "images": np.zeros((10, 100), np.uint8)},
    "short-labels": lambda a: {**a, "labels": a["labels"][:-1]},
    "no-images": lambda a: {k: v[:0] for k, v in a.items()},
    "label-12": lambda a: {
        **a,
        "labels": np.where(np.arange(len(a["labels"])) == 0, 12, a["labels"]),
    },
    "float": lambda a: {**a, "images": a["images"].astype(np.float32) / 255},
    "nan": lambda a: {**a, "images": np.full(a["images"].shape, np.nan, np.float32)},
    "one-digit": _relabel_all_as_the_first,
}


@pytest.mark.parametrize("damage", list(WRONG_CONTENT))
def test_well_formed_tensors_of_the_wrong_content_are_one_clear_line(
    project: DvcProject, good: dict[str, str], damage: str
) -> None:
    """A safetensors file that reads fine but holds what tensorize never writes: each reading
    stage names the file and the fault instead of failing deep inside torch or NumPy."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = project.path / "data/tensors/valid.safetensors"
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    arrays = WRONG_CONTENT[damage](load_file(path))
    path.unlink()  # DVC's cache copy is read-only: never write through it
    save_file(arrays, path, metadata=meta)
    # evaluate compares its logits with valid's labels only: one digit throughout is still a split
    for name in ["baseline", "train"] + ([] if damage == "one-digit" else ["evaluate"]):
        r = stage(project.path, name)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (name, r.stderr)
        errors = _error_lines(r.stderr)
        assert len(errors) == 1 and errors[0].startswith(f"{name}: error: data/tensors"), r.stderr
        assert "`dvc repro -f tensorize` writes" in errors[0], r.stderr
    assert {k: v for k, v in outputs(project.path).items() if "tensors" not in k} == {
        k: v for k, v in good.items() if "tensors" not in k
    }


@pytest.mark.parametrize(("name", "limit"), [("tensorize", 16 << 10), ("train", 1 << 10)])
def test_a_full_disk_is_one_line_and_loses_nothing(
    project: DvcProject, good: dict[str, str], name: str, limit: int
) -> None:
    """Files capped at `limit` bytes (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write fails with
    EFBIG as on a full disk with ENOSPC): the safetensors writes fail as any other write."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    r = subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{name}.py")],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=cap,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = _error_lines(r.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"{name}: error: "), r.stderr
    assert "File too large while writing (a full disk or a file-size limit)" in errors[0], r.stderr
    assert outputs(project.path) == good
    assert temporaries(project.path) == []


def test_an_edit_in_place_never_reaches_the_cache(project: DvcProject, good: dict[str, str]):
    """DVC's default cache type copies: appending to a workspace output leaves the cache whole,
    `dvc status` sees the change, and `dvc checkout` brings the good file back."""
    path = project.path / "data/tensors/train.safetensors"
    with path.open("ab") as f:
        f.write(b"junk")
    assert "modified" in project.dvc("status").stdout
    project.dvc("repro")  # tensorize runs again and writes the good bytes
    assert outputs(project.path) == good
    with path.open("ab") as f:
        f.write(b"junk")
    project.dvc("checkout", "--force")
    assert outputs(project.path) == good
    cache = project.dvc("cache", "dir").stdout.strip()
    bad = [p for p in Path(cache).rglob("*") if p.is_file() and p.read_bytes().endswith(b"junk")]
    assert bad == []


def test_forced_reruns_are_byte_identical(project: DvcProject, good: dict[str, str]) -> None:
    project.dvc("repro", "--force")
    first = outputs(project.path)
    project.dvc("repro", "--force")
    assert outputs(project.path) == first == good
    for rel in (
        "models/model.safetensors",
        "models/valid_logits.safetensors",
        "data/tensors/train.safetensors",
    ):
        assert _is_safetensors(project.path / rel), rel
    assert temporaries(project.path) == []


def _is_safetensors(path: Path) -> bool:
    """8 bytes of header length, then a JSON header: what safetensors writes, and pickle never."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return 8 + n <= len(data) and isinstance(json.loads(data[8 : 8 + n]), dict)


SLOW_STAGE = """
import time
from mnist_basics import atomic
from mnist_basics.stage import run_stage

def main(params):
    with atomic.atomic_path("out", is_dir=True) as tmp:
        for i in range(30_000):  # enough that removing the temporary takes a while
            (tmp / f"f{i}").write_bytes(b"x")
        print("ready", flush=True)
        time.sleep(60)

run_stage("slow", main)
"""


def test_more_signals_during_the_cleanup_cannot_break_into_it(tmp_path: Path) -> None:
    """Ctrl-C three times in quick succession: the first ends the stage, the others land while
    its temporary folder is being removed and are ignored; one line, exit 130, no temporary."""
    (tmp_path / "slow.py").write_text(SLOW_STAGE)
    proc = subprocess.Popen(
        [sys.executable, "slow.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    out, rc = proc.stdout.read(), proc.wait(timeout=60)
    assert rc == 130, out
    assert out.strip() == "slow: interrupted; the last good outputs are left as they were", out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.py"]


RENAMING_STAGE = """
import contextlib, os, signal
from mnist_basics import atomic
from mnist_basics.stage import run_stage

real_swap_in, real_together = atomic._swap_in, atomic.together

def swap_in_then_ctrl_c(tmp, target):
    old = real_swap_in(tmp, target)
    os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C now
    return old

@contextlib.contextmanager
def together_then_ctrl_c():
    with real_together():
        yield
    if not atomic._held:  # the stage's own block has ended: its outputs are replaced
        os.kill(os.getpid(), signal.SIGINT)

if WHEN == "during":
    atomic._swap_in = swap_in_then_ctrl_c
else:
    atomic.together = together_then_ctrl_c
run_stage("renaming", lambda params: atomic.write_bytes("out", b"new"))
"""


@pytest.mark.parametrize("when", ["during", "after"])
def test_ctrl_c_during_or_after_the_renames_says_the_outputs_are_new(
    tmp_path: Path, when: str
) -> None:
    """A signal during the renames waits for them, so every output is new; one just after them
    finds them new too. The line says so, and that dvc.lock does not record them."""
    (tmp_path / "renaming.py").write_text(f"WHEN = {when!r}\n" + RENAMING_STAGE)
    (tmp_path / "out").write_bytes(b"old")
    r = subprocess.run(
        [sys.executable, "renaming.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == (
        "renaming: interrupted as its outputs were replaced: all are new, but dvc.lock does not "
        "record them; run it again"
    ), r.stderr
    assert (tmp_path / "out").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "renaming.py"]
