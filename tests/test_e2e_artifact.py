"""The model as a DVC artifact (`mnist-model` in dvc.yaml), fetched by another project with real
dvc, git and gto, as docs/predict-and-serve.md says: from a DVC remote it was pushed to, or from a
local clone with the cache; and the one error a git-only clone with nothing pushed gives."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from dvc_fixtures import BIN, DvcProject
from share_fixtures import copy_project, out, reproduced, with_origin  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

MODEL = "models/model.safetensors"
# What dvc get, dvc import and dvc artifacts get all say with neither a remote nor a cache.
NO_STORAGE = "No storage files available: 'models/model.safetensors'"
# dvc.api.open reads the model into a file: `python -c API <repo> <file>`.
API = (
    "import sys, dvc.api\n"
    "with dvc.api.open('models/model.safetensors', repo=sys.argv[1], mode='rb') as f:\n"
    "    data = f.read()\n"
    "open(sys.argv[2], 'wb').write(data)\n"
)


def register(proj: DvcProject, origin: Path) -> None:
    """`gto register --push`, as the docs say: the annotated tag `mnist-model@v1.0.0` that
    `dvc artifacts get` looks for, in the project and its origin."""
    proj.run(str(BIN / "gto"), "register", "mnist-model", "--version", "v1.0.0", "--push")
    tag = "refs/tags/mnist-model@v1.0.0"
    assert proj.run("git", "-C", str(origin), "cat-file", "-t", tag).stdout.strip() == "tag"


def consumer(path: Path, env: dict[str, str]) -> DvcProject:
    """Another project, a DVC repo of its own (`dvc import` needs one), knowing nothing of ours."""
    path.mkdir()
    c = DvcProject(path, env)
    c.git("init", "-q", "-b", "main")
    c.dvc("init", "-q")
    return c


def fetch_all(c: DvcProject, repo: str, check: bool = True) -> dict[str, object]:
    """The model four ways: {way: the bytes it wrote, or the failed command's output}."""
    runs = {
        "artifacts get": (c.dvc, "artifacts", "get", repo, "mnist-model", "-o", "a.safetensors"),
        "get": (c.dvc, "get", repo, MODEL, "-o", "g.safetensors"),
        "import": (c.dvc, "import", repo, MODEL, "-o", "i.safetensors"),
        "dvc.api.open": (c.run, sys.executable, "-c", API, repo, "o.safetensors"),
    }
    got: dict[str, object] = {}
    for way, (cmd, *args) in runs.items():
        r = cmd(*args, timeout=120, check=check)
        f = c.path / args[-1]  # each way's last argument is the file it writes
        got[way] = f.read_bytes() if r.returncode == 0 and f.is_file() else (r.returncode, out(r))
    return got


def differing(got: dict[str, object], want: bytes) -> dict[str, object]:
    """The ways that did not give `want`: their failure, or how many other bytes they gave."""
    return {
        w: g if isinstance(g, tuple) else f"{len(g)} other bytes"
        for w, g in got.items()
        if g != want
    }


def test_a_pushed_model_comes_back_by_name_by_path_and_through_the_api(
    reproduced: DvcProject,  # noqa: F811
    tmp_path: Path,
) -> None:
    proj = copy_project(reproduced, tmp_path / "repo")
    store = tmp_path / "store"
    proj.dvc("remote", "add", "-d", "store", str(store))
    proj.commit("DVC remote")
    assert "pushed" in out(proj.dvc("push", MODEL))
    origin = with_origin(proj, tmp_path / "origin.git")
    register(proj, origin)
    want = (proj.path / MODEL).read_bytes()
    shutil.rmtree(proj.path / ".dvc" / "cache")  # only the remote has it now

    got = fetch_all(consumer(tmp_path / "other", proj.env), str(origin))
    assert differing(got, want) == {}


def test_without_a_remote_a_local_clone_with_the_cache_serves_a_git_only_clone_fails(
    reproduced: DvcProject,  # noqa: F811
    tmp_path: Path,
) -> None:
    proj = copy_project(reproduced, tmp_path / "repo")  # no remote: nothing pushed anywhere
    origin = with_origin(proj, tmp_path / "origin.git")  # what a git host would hold
    register(proj, origin)
    want = (proj.path / MODEL).read_bytes()
    local = fetch_all(consumer(tmp_path / "near", proj.env), str(proj.path))
    assert differing(local, want) == {}

    far = consumer(tmp_path / "far", proj.env)
    got = fetch_all(far, str(origin), check=False)
    for way in ("artifacts get", "get", "import"):
        code, text = got[way]
        assert code != 0 and NO_STORAGE in text, (way, text)
    code, text = got["dvc.api.open"]
    assert code != 0 and "PathMissingError" in text, text
    assert "Can't find 'models/model.safetensors' neither locally nor on remote" in text
    assert not list(far.path.glob("*.safetensors"))
