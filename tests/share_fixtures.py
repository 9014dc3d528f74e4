"""Projects for the sharing tests: the pipeline reproduced once per session, copied per test.

`dvc repro` of the synthetic pipeline is the slow part (download, tensorize, train, ...), and
every sharing test starts from the same committed result; so it runs once, in a template repo,
and each test gets a copy of the work tree, its git repo and its DVC cache (not .dvc/tmp, DVC's
per-repo state), as if it had reproduced there itself. A bare git repo stands for the team's
`origin`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dvc_fixtures import DvcProject, _env, make_project

STAGES = ("download", "tensorize", "baseline", "train", "evaluate")


def out(r) -> str:
    return r.stdout + r.stderr


def ran(output: str) -> list[str]:
    """Stages that dvc says it ran."""
    return [s for s in STAGES if f"Running stage '{s}'" in output]


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path) -> DvcProject:
    """The pipeline on the synthetic 3s and 7s, `dvc repro` once, committed."""
    proj = make_project(tmp_path_factory.mktemp("reproduced") / "repo", [str(synthetic_37)], [3, 7])
    assert ran(out(proj.dvc("repro"))) == list(STAGES)
    proj.commit("first run")
    assert proj.git("status", "--porcelain").stdout == ""
    return proj


def copy_project(template: DvcProject, dest: Path) -> DvcProject:
    """A copy of `template` at dest (dest.parent is its HOME), DVC cache and git included."""
    shutil.copytree(
        template.path,
        dest,
        symlinks=True,
        ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else [],
    )
    proj = DvcProject(dest, _env(dest.parent))
    assert proj.git("status", "--porcelain").stdout == ""
    return proj


def with_origin(proj: DvcProject, bare: Path) -> Path:
    """A bare repo as the project's `origin`, holding its main branch."""
    proj.run("git", "init", "-q", "--bare", "-b", "main", str(bare))
    proj.git("remote", "add", "origin", str(bare))
    proj.git("push", "-q", "-u", "origin", "main")
    return bare


def clone(origin: Path, dest: Path, env: dict[str, str]) -> DvcProject:
    """`git clone` of the origin: a teammate's fresh checkout (no cache, no data, no model)."""
    c = DvcProject(dest.parent, env)
    dest.parent.mkdir(parents=True, exist_ok=True)
    c.git("clone", "-q", str(origin), str(dest))
    return DvcProject(dest, env)
