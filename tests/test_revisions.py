"""A name resolves to the same commit in `predict --rev` and `serve ?model=`, and the one DVC
picks: git's rules first (a tag before a branch), then experiment names, of several commits
HEAD's; a name that DVC would call ambiguous is refused. Real git, refs made as DVC makes them."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_basics import app, predict
from mnist_basics.errors import UserError


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    r = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Commits a, b, c; experiment `dup` run on a and on b; `same`, a branch and an experiment;
    `both`, a tag and a branch of different commits."""
    git(tmp_path, "init", "-q", "-b", "main")
    c = {}
    for name in ("a", "b", "c", "run_a", "run_b"):
        git(tmp_path, "commit", "-q", "--allow-empty", "-m", name)
        c[name] = git(tmp_path, "rev-parse", "HEAD")
    for base, run in (("a", "run_a"), ("b", "run_b")):
        ref = f"refs/exps/{c[base][:2]}/{c[base][2:]}"
        git(tmp_path, "update-ref", f"{ref}/dup", c[run])
    git(tmp_path, "update-ref", f"refs/exps/{c['a'][:2]}/{c['a'][2:]}/same", c["run_a"])
    git(tmp_path, "branch", "same", c["b"])
    git(tmp_path, "branch", "both", c["a"])
    git(tmp_path, "tag", "both", c["c"])
    return tmp_path, c


def both_ways(repo: Path, rev: str) -> tuple[str, str]:
    return predict.commit_of(rev, str(repo)), app.commit_of(rev, repo)


@pytest.mark.parametrize(("head", "run"), [("a", "run_a"), ("b", "run_b")])
def test_an_experiment_name_of_two_commits_is_heads(repo, head: str, run: str) -> None:
    path, c = repo
    git(path, "checkout", "-q", c[head])
    assert both_ways(path, "dup") == (c[run], c[run])


def test_an_experiment_name_of_two_commits_neither_heads_is_refused(repo) -> None:
    path, c = repo
    git(path, "checkout", "-q", c["c"])
    with pytest.raises(UserError, match=r"^--rev dup: several commits have this name"):
        predict.commit_of("dup", str(path))
    with pytest.raises(UserError, match=r"^model 'dup': several commits have this name"):
        app.commit_of("dup", path)
    assert "dup" not in [r["id"] for r in app.list_revisions(path)]


def test_git_names_come_first_and_a_tag_before_a_branch(repo) -> None:
    path, c = repo
    assert both_ways(path, "same") == (c["b"], c["b"])  # the branch, not the experiment
    assert both_ways(path, "both") == (c["c"], c["c"])  # the tag, as git itself reads it
    kinds = {r["id"]: r["kind"] for r in app.list_revisions(path)}
    assert kinds["same"] == "branch" and kinds["both"] == "tag"


def test_a_branch_named_workspace_is_reached_by_its_full_name(repo) -> None:
    """`workspace` is the working copy's model, as in `dvc plots diff workspace`: a branch of
    that name is `predict --rev refs/heads/workspace`, and serve does not list it."""
    path, c = repo
    git(path, "branch", "workspace", c["a"])
    assert predict.commit_of("refs/heads/workspace", str(path)) == c["a"]
    assert [r for r in app.list_revisions(path) if r["id"] == "workspace"] == [
        {"id": "workspace", "kind": "workspace"}
    ]


def test_an_experiment_named_like_a_commit_id_is_that_commit(repo) -> None:
    """`dvc exp run -n <HEAD's short sha>` is allowed; DVC, and so both here, read the name as
    the commit."""
    path, c = repo
    git(path, "update-ref", f"refs/exps/{c['a'][:2]}/{c['a'][2:]}/{c['b'][:7]}", c["run_a"])
    assert both_ways(path, c["b"][:7]) == (c["b"], c["b"])


@pytest.mark.parametrize("name", ["another's id", "its base's id", "HEAD"])
def test_an_experiment_git_reads_as_another_commit_is_not_listed(repo, name: str) -> None:
    """serve would label the commit's answers with the experiment's name: a short id of another
    commit, of the one it ran on (`dvc exp run -n <HEAD's short id>`), or `HEAD`."""
    path, c = repo
    name = {"another's id": c["b"][:7], "its base's id": c["a"][:7]}.get(name, name)
    base = f"refs/exps/{c['a'][:2]}/{c['a'][2:]}"
    git(path, "update-ref", f"{base}/{name}", c["run_a"])
    git(path, "update-ref", f"{base}/fine", c["run_a"])
    theirs = git(path, "rev-parse", name)
    assert both_ways(path, name) == (theirs, theirs) and theirs != c["run_a"]
    listed = [r["id"] for r in app.list_revisions(path)]
    assert name not in listed and "fine" in listed


def test_an_experiment_named_like_a_blob_is_not_listed(repo) -> None:
    """No model can be read of it: git, so DVC, reads the name as the blob, no commit."""
    path, c = repo
    (path / "blob").write_text("x\n")
    name = git(path, "hash-object", "-w", "blob")[:7]
    git(path, "update-ref", f"refs/exps/{c['a'][:2]}/{c['a'][2:]}/{name}", c["run_a"])
    assert name not in [r["id"] for r in app.list_revisions(path)]


def test_serve_names_its_own_parameter_in_an_error(repo) -> None:
    """A client of serve gave ?model=, not predict's --rev."""
    path, c = repo
    status, d = app.answer(path, c["a"], b"")
    assert status == 404 and d["error"].startswith(f"model {c['a']}: "), d


def test_a_top_level_ref_file_is_not_a_name_to_dvc(repo) -> None:
    """`git update-ref main X` (no refs/heads/) writes .git/main, which git reads before the
    branch and libgit2, so DVC, ignores."""
    path, c = repo
    git(path, "update-ref", "main", c["a"])
    assert (path / ".git" / "main").exists()
    assert both_ways(path, "main") == (c["run_b"], c["run_b"])


def test_an_experiment_named_with_an_ambiguous_short_id_is_the_experiment(repo) -> None:
    """A name of 4 hex digits that a commit and a blob both begin with: no object to libgit2,
    so DVC reads the experiment (git would pick the commit)."""
    import hashlib

    path, c = repo
    prefix = c["a"][:4]

    def object_id(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0%s" % (len(data), data), usedforsecurity=False).hexdigest()

    content = next(d for i in itertools.count() if object_id(d := b"%d" % i).startswith(prefix))
    (path / "blob").write_bytes(content)
    assert git(path, "hash-object", "-w", "blob").startswith(prefix)
    git(path, "update-ref", f"refs/exps/{c['run_b'][:2]}/{c['run_b'][2:]}/{prefix}", c["c"])
    assert both_ways(path, prefix) == (c["c"], c["c"])


def test_a_remotes_branch_comes_before_an_experiment(repo) -> None:
    """DVC reads `refs/remotes/<remote>/<name>` before experiment names."""
    path, c = repo
    git(path, "update-ref", "refs/remotes/up/dup", c["b"])  # fetched once, no remote `up` now
    git(path, "checkout", "-q", c["a"])
    assert both_ways(path, "dup") == (c["run_a"], c["run_a"])  # DVC reads configured remotes only
    git(path, "config", "remote.up.prune", "true")  # a section without a url is no remote to DVC
    assert both_ways(path, "dup") == (c["run_a"], c["run_a"])
    assert {r["id"]: r["kind"] for r in app.list_revisions(path)}["dup"] == "experiment"
    for remote, commit in (("team/a", "c"), ("other", "b")):
        git(path, "remote", "add", remote, str(path))
        git(path, "update-ref", f"refs/remotes/{remote}/dup", c[commit])
        if remote == "team/a":  # a remote's name may hold a slash
            assert both_ways(path, "dup") == (c["c"], c["c"])
    # Remotes that disagree: DVC tries the experiment names next, and only then gives up.
    assert both_ways(path, "dup") == (c["run_a"], c["run_a"])
    for remote, commit in (("team/a", "c"), ("other", "b")):
        git(path, "update-ref", f"refs/remotes/{remote}/only", c[commit])
    with pytest.raises(UserError, match=r"^--rev only: several commits have this name"):
        predict.commit_of("only", str(path))
    with pytest.raises(UserError, match=r"^model 'only': several commits have this name"):
        app.commit_of("only", path)
    assert "only" not in [r["id"] for r in app.list_revisions(path)]


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[Path, str, str]:
    """A DVC repository whose main holds model A; commit `other` (not on main) holds model B."""
    git(tmp_path, "init", "-q", "-b", "main")
    # dvc init as its own process: DVC's logger in this one may hold a stream an earlier test's
    # capture closed
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    model = tmp_path / predict.MODEL_PATH
    model.parent.mkdir()
    shas = []
    for content in (b"model A", b"model B"):
        model.write_bytes(content)
        git(tmp_path, "add", "-A")
        git(tmp_path, "commit", "-q", "-m", content.decode())
        shas.append(git(tmp_path, "rev-parse", "HEAD"))
    git(tmp_path, "reset", "-q", "--hard", shas[0])
    return tmp_path, shas[0], shas[1]


@pytest.mark.parametrize(
    "ref",
    ["refs/{sha}", "refs/heads/{sha}", "refs/tags/{sha}", "refs/remotes/{sha}", "remote {sha}"],
)
def test_a_ref_named_with_a_commit_id_does_not_change_what_is_read(two_models, ref: str) -> None:
    """DVC looks a bare commit id up as a ref name first (git's rules for any name), so a ref
    named with main's id and pointing elsewhere would make `--rev main` read another model if
    main's id were handed to DVC bare."""
    path, main, other = two_models
    if ref.startswith("remote "):  # a remote of that name whose HEAD is elsewhere
        git(path, "remote", "add", main, "/nonexistent")
        git(path, "update-ref", f"refs/remotes/{main}/side", other)
        git(path, "symbolic-ref", f"refs/remotes/{main}/HEAD", f"refs/remotes/{main}/side")
    else:
        git(path, "update-ref", ref.format(sha=main), other)
    import dvc.api

    assert predict.read_at_rev("main", str(path)) == b"model A"
    assert both_ways(path, "main") == (main, main)
    for rev in (
        main,
        other,
    ):  # the id itself: what DVC reads for it (the ref, where one is so named)
        want = dvc.api.read(predict.MODEL_PATH, repo=str(path), rev=rev, mode="rb")
        assert predict.read_at_rev(rev, str(path)) == want
    assert predict.read_at_rev(other, str(path)) == b"model B"


def test_a_ref_name_with_a_unicode_line_break_is_one_name(repo) -> None:
    """git allows U+2028 in a ref name; split as lines of text it made up a tag `v9`."""
    path, c = repo
    base = f"refs/exps/{c['a'][:2]}/{c['a'][2:]}"
    git(path, "update-ref", f"{base}/e\u2028refs/tags/v9", c["run_a"])  # by hand: DVC's have no /
    git(path, "update-ref", f"{base}/f\u2028g", c["run_a"])
    kinds = {r["id"]: r["kind"] for r in app.list_revisions(path)}
    assert kinds["f\u2028g"] == "experiment"
    assert not {"v9", "e", "f", "g", "e\u2028refs/tags/v9"} & set(kinds)
