"""`mnist-basics sweep` refuses hostile arguments before it runs anything: real git, no Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_basics.sweep import (
    Outcome,
    Spec,
    SweepError,
    _interrupted_line,
    _landed,
    _linked,
    _links,
    exp_ref,
    expand,
    resolve_origin,
    run_name,
)


def sweep(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mnist_basics.cli", "sweep", *args]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)


def git_repo(path: Path) -> Path:
    path.mkdir()
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=path, check=True
        )
    return path


def test_an_origin_that_is_a_git_option_is_refused_not_run(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    pwned = tmp_path / "pwned"
    r = sweep(repo, "--origin", f"--upload-pack=touch {pwned}")
    assert r.returncode == 2, r.stderr
    assert not pwned.exists()
    assert "--origin" in r.stderr and "Traceback" not in r.stderr


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    r = sweep(repo, "--origin", str(repo), "-S", "train.lr=range(0,100000000)")
    assert r.returncode == 2, r.stderr
    assert "100000000 runs; at most" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_an_empty_grid_is_refused_before_ray_starts(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    r = sweep(repo, "--origin", str(repo), "-S", "train.lr=range(5,1)")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "sweep: error: -S: the grid of train.lr=range(5,1) has no runs (an empty range?)"
    ]


def test_an_origin_over_a_command_transport_is_refused_not_run(tmp_path: Path) -> None:
    """`fd::0` made git ls-remote wait on its stdin; `ext::` runs a command."""
    repo = git_repo(tmp_path / "repo")
    pwned = tmp_path / "pwned"
    for origin in ("fd::0", f"ext::sh -c touch% {pwned}"):
        r = sweep(repo, "--origin", origin, "-S", "train.lr=0.1")
        assert r.returncode == 2, r.stderr
        assert "sweep: error: git ls-remote" in r.stderr and "Traceback" not in r.stderr
    assert not pwned.exists()


def test_serve_with_a_bad_port_says_so_in_one_line(tmp_path: Path) -> None:
    for port in ("99999", "-1", "x"):
        cmd = [sys.executable, "-m", "mnist_basics.cli", "serve", "--port", port]
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "is not a port" in r.stderr and "Traceback" not in r.stderr


def test_a_name_taken_by_an_experiment_is_refused_before_ray_starts(tmp_path: Path) -> None:
    """`dvc exp push` of a run whose name the origin has already says "No experiments to push"
    and exits 0: a second sweep of one commit would report runs it never landed."""
    repo, origin = git_repo(tmp_path / "repo"), git_repo(tmp_path / "origin")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "push", "-q", str(origin), "HEAD:refs/heads/x"], cwd=repo, check=True)
    for where, name in ((origin, "grid-2"), (repo, "mine-1")):
        subprocess.run(["git", "update-ref", exp_ref(commit, name), "HEAD"], cwd=where, check=True)
    for name in ("grid", "mine"):
        r = sweep(repo, "--origin", str(origin), "-n", name, "-S", "train.lr=0.1,0.2")
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"sweep: error: -n {name}: experiments {name}-1 ... {name}-2 of commit {commit[:7]} "
            "exist already, here or on the origin; give another name"
        ]


@pytest.mark.parametrize("name", ["-x", "--help", "a b", "a..b", "x.", "", "a" * 101, "é/x"])
def test_a_name_that_is_no_run_name_is_refused(name: str) -> None:
    """A name reaches `dvc exp run -n NAME-1`, which takes no `--`: an option or a name git
    cannot keep as a ref would fail every run, each on its own node."""
    with pytest.raises(SweepError, match=r"^-n .*: not a run name; allowed: letters, digits"):
        run_name(name, "c" * 40, set(), 2)


def test_the_default_name_is_the_first_free_one() -> None:
    commit = "a53f09e" + "0" * 33
    assert run_name(None, commit, set(), 3) == "sweep-a53f09e"
    taken = {"sweep-a53f09e-2", "sweep2-a53f09e-1", "other-1"}
    assert run_name(None, commit, taken, 3) == "sweep3-a53f09e"
    assert run_name(None, commit, taken, 1) == "sweep-a53f09e"  # only sweep-a53f09e-1 is needed
    with pytest.raises(SweepError, match=r"-n other: experiments other-1 \.\.\. other-2 of commit"):
        run_name("other", commit, taken, 2)


def test_a_relative_origin_means_one_repository_for_the_checks_and_the_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks ran in the repo's root, each task's clone in its own temp folder: `--origin
    ../remote.git` meant $TMPDIR/remote.git to the tasks, which anyone on the machine may make."""
    repo = git_repo(tmp_path / "repo")
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    url, here = resolve_origin(repo, "../../remote.git")
    assert url == here == str(tmp_path / "remote.git")
    for url in ("ssh://host/x.git", "git@host:x.git", "gh:me/x.git", "[::1]:x.git"):
        assert resolve_origin(repo, url) == (url, url)  # git's rule: a colon before any slash
    assert resolve_origin(repo, "./a:b.git")[0] == str(repo / "sub" / "a:b.git")


@pytest.mark.parametrize("cpus", ["-1", "0", "nan", "inf", "x", "1e-9", "0.33333"])
def test_a_number_of_cpus_that_is_none_is_refused_in_one_line(tmp_path: Path, cpus: str) -> None:
    r = sweep(git_repo(tmp_path / "repo"), f"--num-cpus={cpus}")
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (
        f"mnist-basics sweep: error: argument --num-cpus: {cpus!r}: allowed: a number of CPUs "
        "above 0, in steps of 0.0001"
    )


@pytest.mark.parametrize(
    "path",
    ["/tmp/x.yaml", "../../x.yaml", "./../x.yaml", "link.yaml", "sub/../conf.yaml",
     "REPO/conf.yaml", "committed/p.yaml"],
)  # fmt: skip
def test_a_params_file_outside_the_repository_is_refused(tmp_path: Path, path: str) -> None:
    """Every task's `dvc exp run -S FILE:...` would rewrite that file on its node, through a
    committed link too."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "link.yaml").symlink_to(tmp_path / "victim.yaml")
    (repo / "conf.yaml").write_text("x: 0\n")
    (repo / "committed").mkdir()  # a folder here, a link out in the commit the tasks check out
    path = path.replace("REPO", str(repo))  # the user's own checkout, not the task's clone
    with pytest.raises(SweepError) as e:
        expand([f"{path}:x=1"], repo, links={"committed"})
    assert str(e.value) == f"-S {path}:...: allowed: a params file inside the repository"
    assert expand(["conf.yaml:x=1,2"], repo) == [["conf.yaml:x=1"], ["conf.yaml:x=2"]]


def test_the_links_of_the_commit_the_tasks_check_out(tmp_path: Path) -> None:
    """A link removed here but committed still leads each task's run out of its clone."""
    run = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*run, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "conf").symlink_to("/tmp")
    (tmp_path / "p.yaml").write_text("x: 0\n")
    subprocess.run([*run, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*run, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    (tmp_path / "conf").unlink()
    assert _links(tmp_path, "HEAD") == {"conf"}


def test_a_params_file_dvc_pull_linked_into_the_cache_is_not_written(tmp_path: Path) -> None:
    """With cache.type hardlink or symlink, `dvc pull` makes a DVC-tracked file a link into the
    shared cache; `dvc exp run -S` would write through it, into the cache and other checkouts."""
    (tmp_path / "cache").write_text("x: 1\n")
    (tmp_path / "hard.yaml").hardlink_to(tmp_path / "cache")
    (tmp_path / "soft.yaml").symlink_to(tmp_path / "cache")
    (tmp_path / "own.yaml").write_text("x: 1\n")
    for name in ("hard.yaml", "soft.yaml"):
        assert _linked(tmp_path, [f"{name}:x=2", "train.lr=1"]) == (
            f"-S {name}:...: a link here (into DVC's cache?); allowed: a file of its own"
        )
    assert _linked(tmp_path, ["own.yaml:x=2", "new.yaml:x=1", "train.lr=1"]) == ""


def test_params_yaml_of_a_bare_key_and_a_link_on_the_way_are_checked_too(tmp_path: Path) -> None:
    """`-S x=2` writes params.yaml, which `dvc pull` links into the cache when DVC tracks it; a
    file system that ignores case reads `LNK/x.yaml` through a committed link `lnk`, as here
    `lnk/x.yaml` goes through it."""
    (tmp_path / "cache").write_text("x: 1\n")
    (tmp_path / "params.yaml").hardlink_to(tmp_path / "cache")
    assert _linked(tmp_path, ["x=2"]) == (
        "-S params.yaml:...: a link here (into DVC's cache?); allowed: a file of its own"
    )
    (tmp_path / "params.yaml").unlink()
    (tmp_path / "params.yaml").write_text("x: 1\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.yaml").write_text("y: 1\n")
    (tmp_path / "lnk").symlink_to(tmp_path / "outside")
    assert _linked(tmp_path, ["x=2", "lnk/x.yaml:y=3"]) == (
        "-S lnk/x.yaml:...: a link here (into DVC's cache?); allowed: a file of its own"
    )
    assert _linked(tmp_path, ["x=2", "outside/x.yaml:y=3", "outside:y=3"]) == ""  # a folder: DVC's


def test_a_file_name_that_is_not_utf8_is_no_traceback(tmp_path: Path) -> None:
    run = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*run, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / os.fsdecode(b"caf\xe9")).symlink_to("/tmp")
    subprocess.run([*run, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*run, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    assert _links(tmp_path, "HEAD") == {os.fsdecode(b"caf\xe9")}


def test_an_interrupt_names_what_the_origin_has_though_its_task_never_returned(
    tmp_path: Path,
) -> None:
    """A task pushes, then checks the origin and removes its clone: Ctrl-C in that moment left
    its run out of the interrupt's line, which is what the user pulls."""
    repo = git_repo(tmp_path / "repo")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    for name in ("s-2", "s-3"):  # s-3 failed after its ref landed: no run to pull
        subprocess.run(["git", "update-ref", exp_ref(commit, name), commit], cwd=origin, check=True)
    specs = [Spec(f"s-{i}", [], str(origin), commit) for i in (1, 2, 3)]
    outcomes = {"s-1": Outcome(True), "s-3": Outcome(False, reason="diverged")}
    assert _landed(repo, str(origin), commit, specs, outcomes) == (["s-1"], ["s-2"])
    gone = tmp_path / "gone.git"  # an origin that cannot answer: what the tasks said
    assert _landed(repo, str(gone), commit, specs, outcomes) == (["s-1"], [])


def test_an_unreported_run_on_the_origin_is_not_called_this_sweeps() -> None:
    """Two sweeps of one name, begun while the names were free: the interrupted one named the
    other's run, of other params, as its own landed run, to be pulled."""
    line = _interrupted_line("origin", ["w-2"], ["w-1"])
    assert line.startswith(
        "sweep: interrupted; unfinished runs cancelled; those that landed: dvc exp pull origin "
        "w-2; on the origin but not reported by their tasks: w-1 ("
    )
    assert "another sweep of this name may have made it" in line
    assert _interrupted_line("origin", [], []) == "sweep: interrupted; unfinished runs cancelled"


def test_the_interrupted_line_is_said_before_ray_shuts_down() -> None:
    """Ray sets SIGTERM back to the default early in its shutdown, for the whole process (its
    threads do not block it: blocking it in ours did not help): a job manager's SIGTERM just
    after its SIGINT then ends the sweep, which must have said what landed by then. The
    stand-in does what Ray's shutdown does (the fault is made: the window is a second of Ray's)."""
    code = (
        "import ctypes, os, signal, time\n"
        "from mnist_basics import atomic, sweep\n"
        "class Ray:\n"
        "    def cancel(self, ref, force):\n"
        "        print('cancelled', ref, flush=True)\n"
        "    def shutdown(self):\n"
        "        ctypes.CDLL(None).signal(signal.SIGTERM, ctypes.c_void_p(0))  # SIG_DFL\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "atomic.ignore_signals()  # after the first Ctrl-C\n"
        "sweep._stop(Ray(), ['run-2'], lambda: 'sweep: interrupted; those that landed: run-1')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGTERM, r.stderr  # ended in the shutdown, as with Ray
    assert r.stdout == "cancelled run-2\n"
    assert r.stderr == "sweep: interrupted; those that landed: run-1\n"


def test_a_ctrl_c_in_rays_shutdown_waits_for_it_to_end() -> None:
    """Cut short by a Ctrl-C, Ray's shutdown left its dashboard and runtime-env agents running
    (233 MB); the Ctrl-C is held until it ends, then interrupts as before."""
    code = (
        "import os, signal, time\n"
        "from mnist_basics import atomic, sweep\n"
        "class Ray:\n"
        "    def shutdown(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.2)  # Python runs a handler here\n"
        "        print('shut down', flush=True)\n"
        "atomic.handle_signals()\n"
        "try:\n"
        "    sweep._shutdown(Ray())\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after it')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "shut down\ninterrupted after it\n"), r.stderr


def test_a_users_value_forges_no_line_of_the_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    """A newline in a -S value made a line `[1/1] ... ok` under the run's FAILED one."""
    from mnist_basics.sweep import Outcome, Spec, _summary

    spec = Spec("w-1", ["train.lr=0.1\n[1/1] w-1 ok \x1b]52;c;eA==\x07"], "origin", "c" * 40)
    _summary("w", [spec], {"w-1": Outcome(False, 1.0, reason="dvc: failed")}, "origin")
    out = capsys.readouterr().out
    assert "\x1b" not in out and not any(ln.startswith("[1/1]") for ln in out.splitlines())
    assert "train.lr=0.1\\n[1/1] w-1 ok \\x1b]52;c;eA==\\x07" in out


def test_an_address_ray_would_print_raw_is_refused_in_one_line() -> None:
    """A newline in --address split Ray's own warning lines (printed as given, after 35 s)."""
    r = subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "sweep", "--address", "no-such\n:6379"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1].endswith(
        "'no-such\\n:6379' is not a Ray address: allowed: ray://HEAD:10001, HEAD:6379 or auto"
    ), r.stderr
