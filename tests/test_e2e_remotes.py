"""Remote storage against real servers on 127.0.0.1: S3, WebDAV and SSH.

One pipeline project, reproduced once on the synthetic source and committed; for each server:
`dvc remote add -d` with its credentials kept in .dvc/config.local (or the environment), commit,
`dvc push`; then a fresh `git clone`: without credentials `dvc pull` is refused by the server,
with them every output comes back byte for byte and `dvc repro` has nothing to run. No secret is
in any git revision of either repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dvc_fixtures import DvcProject
from remote_servers import (  # noqa: F401  (fixtures)
    Remote,
    s3_remote,
    ssh_remote,
    trust_host,
    webdav_remote,
)
from share_fixtures import copy_project, out, ran, reproduced  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.remote]

# Every output DVC caches (the rest is in git): what a teammate needs from the remote.
CACHED = (
    "data/raw.zip",
    "data/tensors",
    "models/model.safetensors",
    "models/valid_logits.safetensors",
)
# What the server (or the client, for want of a key) says when a clone has no credentials.
AUTH_REFUSED = r"(?i)denied|unauthori[sz]ed|\b40[13]\b|credential|permission|authenticat|signature"


def files(root: Path, rel: str) -> dict[str, bytes]:
    """{relative name: bytes} of a file or every file of a folder."""
    p = root / rel
    if p.is_file():
        return {rel: p.read_bytes()}
    return {
        f"{rel}/{q.relative_to(p)}": q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()
    }


def assert_no_secret_in_git(proj: DvcProject, remote: Remote) -> None:
    """`git grep` over every revision finds no credential; config.local is not tracked."""
    revs = proj.git("rev-list", "--all").stdout.split()
    for secret in remote.secrets:
        r = proj.git("grep", "-F", "-l", secret, *revs, check=False)
        assert r.returncode == 1 and r.stdout == "", f"a credential is in git: {r.stdout}"
    tracked = proj.git("ls-files").stdout.split()
    assert ".dvc/config.local" not in tracked
    assert proj.git("check-ignore", "-q", ".dvc/config.local", check=False).returncode == 0


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    reproduced: DvcProject,  # noqa: F811
) -> DvcProject:
    """The whole pipeline reproduced and committed (no remote yet); the servers' tests add one
    remote each, in turn."""
    return copy_project(reproduced, tmp_path_factory.mktemp("remotes") / "repo")


@pytest.mark.parametrize("server", ["s3_remote", "webdav_remote", "ssh_remote"])
def test_push_clone_pull_restores_every_output(
    pipeline: DvcProject, server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote: Remote = request.getfixturevalue(server)
    trust_host(pipeline.env, remote)
    remote.add(pipeline)  # -d: the new default; credentials into .dvc/config.local only
    pipeline.git("add", ".dvc/config")
    pipeline.git("commit", "-q", "-m", f"DVC remote {remote.name}")
    assert_no_secret_in_git(pipeline, remote)

    r = pipeline.dvc("push", timeout=180)
    assert re.search(r"\d+ files? pushed", out(r)), out(r)
    if remote.root is not None:  # the server's folder holds DVC's content-addressed files
        assert any(p.is_file() for p in remote.root.rglob("*"))

    pipeline.git("clone", "-q", str(pipeline.path), str(tmp_path / "clone"))
    clone = DvcProject(tmp_path / "clone", dict(pipeline.env))
    assert f"remote = {remote.name}" in (clone.path / ".dvc/config").read_text()  # from git
    assert_no_secret_in_git(clone, remote)

    # Without credentials the server refuses: nothing in git lets a clone read the store.
    r = clone.dvc("pull", timeout=180, check=False)
    assert r.returncode != 0, out(r)
    assert re.search(AUTH_REFUSED, out(r)), out(r)
    assert not (clone.path / "models" / "model.safetensors").exists()

    # A teammate's own credentials: S3 from the environment, the others in config.local.
    if remote.env:
        clone.env.update(remote.env)
    else:
        remote.add_credentials(clone)
    r = clone.dvc("pull", timeout=180)
    assert re.search(r"\d+ files? fetched", out(r)), out(r)
    for rel in CACHED:
        want, got = files(pipeline.path, rel), files(clone.path, rel)
        assert want and set(got) == set(want), rel
        assert all(got[k] == want[k] for k in want), rel

    r = clone.dvc("repro")
    assert ran(out(r)) == [] and "Running stage" not in out(r), out(r)
    assert clone.git("status", "--porcelain").stdout == ""
