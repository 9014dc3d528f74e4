"""dvc.yaml names as a stage's deps all the library code the stage runs, so an edit of any of it
makes DVC run the stage again; only the runner's own modules are left out (RUNNER)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# The stage runner, atomic writes, one-line errors and the params check: whether a stage
# writes its outputs, never what they hold. An edit to them would rerun every stage.
RUNNER = {
    SRC / "mnist_basics" / f
    for f in ("__init__.py", "atomic.py", "errors.py", "params.py", "stage.py")
}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def imported(path: Path) -> set[Path]:
    """The library files `path` imports, at module level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_basics"):
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("mnist_basics")}
    files = set()
    for name in names:
        base = SRC.joinpath(*name.split("."))
        for f in (base / "__init__.py", base.with_suffix(".py")):
            if f.is_file():
                files.add(f)
    return files


def closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for f in imported(todo.pop()) - seen:
            seen.add(f)
            todo.append(f)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stages_deps_hold_every_library_file_it_runs(stage: str) -> None:
    deps = [ROOT / d for d in STAGES[stage]["deps"] if isinstance(d, str)]
    script = ROOT / "stages" / f"{stage}.py"
    assert script in deps
    runs = closure(script) - RUNNER
    missing = sorted(
        str(f.relative_to(ROOT)) for f in runs if not any(f == d or d in f.parents for d in deps)
    )
    assert missing == [], f"{stage}: add to its deps in dvc.yaml"


def test_the_committed_lock_records_the_code_as_it_is() -> None:
    """A code dep edited without `dvc repro` leaves dvc.lock behind: a fresh clone's `dvc repro`
    would run its stages again and leave dvc.lock changed in `git status`."""
    import hashlib

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    stale = sorted(
        {
            f"{stage}: {dep['path']}"
            for stage, entry in lock.items()
            for dep in entry.get("deps", [])
            if dep["path"].endswith(".py")
            and hashlib.md5((ROOT / dep["path"]).read_bytes(), usedforsecurity=False).hexdigest()
            != dep["md5"]
        }
    )
    assert stale == [], "run `dvc repro` and commit dvc.lock"
