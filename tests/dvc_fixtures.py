"""A temporary DVC project: this project's pipeline, copied into a fresh git repo, run for real."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What the pipeline needs to run, as a user's clone has it (no data, no metrics yet).
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "stages",
    "src",
    ".dvc/config",
    ".dvc/plots",
    ".dvcignore",
    ".gitignore",
    "pyproject.toml",
)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        GIT_AUTHOR_NAME="e2e",
        GIT_AUTHOR_EMAIL="e2e@example.invalid",
        GIT_COMMITTER_NAME="e2e",
        GIT_COMMITTER_EMAIL="e2e@example.invalid",
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(home / "dvc-site-cache"),
        HOME=str(home),
        # Inherited by everything the project starts, daemons included (dvc's queue workers
        # detach from their parent), so a test can find and end exactly its own processes.
        MNIST_BASICS_E2E_HOME=str(home),
    )
    return env


@dataclass
class DvcProject:
    """A temporary repository holding the pipeline, with helpers that run real dvc and git."""

    path: Path
    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a command in the project; a hang fails the test instead of hanging CI.

        Output goes through files, not pipes: `dvc queue start`'s worker launcher keeps the
        caller's stdout and stderr open until its worker exits, so with pipes the call would
        last as long as the whole queue.
        """
        with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
            r = subprocess.run(
                list(args),
                cwd=self.path,
                env=self.env,
                stdout=so,
                stderr=se,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
            for f in (so, se):
                f.seek(0)
            r.stdout, r.stderr = (f.read().decode(errors="replace") for f in (so, se))
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def dvc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, **kw)

    def git(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("git", *args, **kw)

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def set_params(self, **sections: dict) -> None:
        """Update params.yaml, section by section."""
        p = self.params()
        for sec, vals in sections.items():
            p.setdefault(sec, {}).update(vals)
        (self.path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    def json(self, rel: str) -> dict:
        return json.loads((self.path / rel).read_text())

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def processes(self) -> list[int]:
        """Pids still alive that this project's commands started (see `own_processes`)."""
        return own_processes(self.env["MNIST_BASICS_E2E_HOME"])

    def stop_queue(self, grace: float = 30) -> list[int]:
        """Stop dvc's experiment queue and make sure nothing it started outlives the test.

        `dvc queue stop --kill` kills running tasks and asks the celery workers to exit; what is
        still alive after `grace` seconds (a worker, or a stage's python whose task was killed)
        gets SIGKILL by pid. Returns the pids that had to be killed.
        """
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.dvc("queue", "stop", "--kill", timeout=grace, check=False)
        return end_processes(self.env["MNIST_BASICS_E2E_HOME"], grace)


def own_processes(mark: str) -> list[int]:
    """Pids of this user's processes whose environment has MNIST_BASICS_E2E_HOME=`mark`."""
    needle = f"MNIST_BASICS_E2E_HOME={mark}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            ours = proc.stat().st_uid == os.getuid()
            if ours and needle in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def in_sessions(sessions: list[int]) -> list[int]:
    """Pids of live processes whose session id is one of `sessions`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in "ZX" and int(fields[3]) in sessions:
            pids.append(int(proc.name))
    return pids


def end_processes(mark: str, grace: float = 30) -> list[int]:
    """Wait up to `grace` s for the processes marked `mark` to exit; SIGKILL the rest by pid."""
    deadline = time.monotonic() + grace
    while (left := own_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def make_project(dest: Path, sources: list[str], digits: list[int], **train: object) -> DvcProject:
    """Copy the pipeline into dest, point data.sources at `sources`, git init and commit."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in PROJECT_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    proj = DvcProject(dest, _env(dest.parent))
    proj.set_params(data={"digits": digits, "sources": sources}, train=train)
    proj.git("init", "-q", "-b", "main")
    proj.commit("pipeline")
    return proj


@pytest.fixture
def dvc_project_factory(tmp_path: Path):
    """Make as many temporary projects as a test needs."""
    count = 0

    def make(sources: list[str], digits: list[int] | None = None, **train: object) -> DvcProject:
        nonlocal count
        count += 1
        return make_project(tmp_path / f"project{count}", sources, digits or [3, 7], **train)

    return make
