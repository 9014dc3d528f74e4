"""`mnist-basics sweep`: a queued sweep's grid and run names, one Ray task per `dvc exp run`.

Each task clones the origin at HEAD, `dvc pull`s, `dvc exp run`s and `dvc exp push`es; no
credential travels with it (docs/sharing.md says what every node needs).
"""

import argparse
import functools
import itertools
import logging
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_basics import atomic
from mnist_basics.errors import printable, printable_lines
from mnist_basics.stage import end_children

MAX_RUNS = 10_000  # runs of one grid
STEP_TIMEOUT = 3600.0  # seconds any one git or dvc command of a task may take
LANDED_TIMEOUT = 10.0  # seconds the origin has to say, after an interrupt, which runs are there
GIT_PROTOCOLS = "file:git:http:https:ssh"  # GIT_ALLOW_PROTOCOL, unless the user set their own
STAGE_ERROR = re.compile(r"^[\w.-]+: error: ")
# a git ref name's part, not an option
EXP_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][\w.-]{0,99}(?<!\.)")
DVC = [sys.executable, "-m", "dvc"]


class SweepError(Exception):
    """A mistake that stops the sweep before any task starts (exit 2)."""


@dataclass
class Spec:
    """One run of the grid: what a task needs to know, nothing secret."""

    name: str
    overrides: list[str]
    origin: str
    commit: str


@dataclass
class Outcome:
    ok: bool
    seconds: float = 0.0
    node: str = ""
    reason: str = ""


def _run(
    cmd: list[str], cwd: Path | str, timeout: float, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """`cmd` with its output captured and no stdin: nothing of a task waits on a terminal; git
    follows only the transports a repository is shared over (not `fd::`, `ext::`)."""
    env = {"GIT_ALLOW_PROTOCOL": GIT_PROTOCOLS, **(os.environ if env is None else env)}
    return subprocess.run(
        cmd, cwd=cwd, env=env, timeout=timeout, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, errors="surrogateescape",  # a ref or file name need not be UTF-8
    )  # fmt: skip


def expand(params: list[str], repo: Path = Path(), links: Iterable[str] = ()) -> list[list[str]]:
    """The `-S` arguments of each run, as `dvc exp run --queue -S` would expand `params`; a FILE
    must be a path inside `repo` both here and in the tasks' checkout, which has `links`."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps, to_hydra_overrides
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    def size(value: object) -> int:
        if isinstance(value, RangeSweep):
            return max(0, math.ceil((value.stop - value.start) / value.step))
        return len(value.list) if isinstance(value, ChoiceSweep) else 1

    try:
        overrides = to_path_overrides(params)
        for name in overrides:  # a task's `dvc exp run` would write outside its clone
            path = Path(name)
            inside = (repo / path).resolve().is_relative_to(repo.resolve())
            linked = any(path == Path(ln) or Path(ln) in path.parents for ln in links)
            if path.is_absolute() or ".." in path.parts or not inside or linked:
                raise SweepError(f"-S {name}:...: allowed: a params file inside the repository")
        runs = math.prod(
            size(o.value()) for ovs in overrides.values() for o in to_hydra_overrides(ovs)
        )
        # counted before the grid is built: a range can be huge
        sweeps = get_hydra_sweeps(overrides) if 0 < runs <= MAX_RUNS else []
    except SweepError:
        raise
    except (InvalidArgumentError, ValueError, ZeroDivisionError) as e:
        raise SweepError(f"-S: {e}") from e
    except Exception as e:  # hydra's OverrideParseException and friends
        raise SweepError(f"-S: cannot parse {params}: {e}") from e
    if runs == 0:
        raise SweepError(f"-S: the grid of {' '.join(params)} has no runs (an empty range?)")
    if runs > MAX_RUNS:
        raise SweepError(f"-S: the grid has {runs} runs; at most {MAX_RUNS} are allowed")
    return [
        [o if path == "params.yaml" else f"{path}:{o}" for path, ovs in s.items() for o in ovs]
        for s in sweeps
    ]


def _links(repo: Path, commit: str) -> set[str]:
    """The symbolic links of `commit`'s tree, which the tasks check out."""
    tree = _git(repo, "ls-tree", "-r", "-z", "--full-tree", commit).split("\0")
    return {entry.split("\t", 1)[1] for entry in tree if entry.startswith("120000 ")}


def reason_of(output: str) -> str:
    """The line that says why: the stage's `<stage>: error: ...`, else DVC's last ERROR line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for pick in (
        STAGE_ERROR.match,
        lambda ln: ln.startswith("ERROR:"),
        lambda ln: "error" in ln.lower() or "fatal" in ln.lower(),
        bool,  # else the last line
    ):
        if found := [ln for ln in lines if pick(ln)]:
            return found[-1]
    return "no output"


def _node() -> str:
    try:
        import ray

        return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:
        return socket.gethostname()


def run_one(spec: Spec) -> Outcome:
    """Clone, pull, `dvc exp run`, `dvc exp push`, in a temp folder removed afterwards."""
    start = time.monotonic()
    who = {"NAME": "mnist-basics sweep", "EMAIL": "sweep@" + socket.gethostname()}
    ids = {f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER") for k, v in who.items()}
    env = {"DVC_NO_ANALYTICS": "1", **ids, **os.environ}  # the node's own settings win
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    sets = [a for o in spec.overrides for a in ("-S", o)]
    with tempfile.TemporaryDirectory(
        prefix=f"mnist-sweep-{spec.name}-", ignore_cleanup_errors=True
    ) as work:
        repo = Path(work) / "repo"
        steps = [
            ("git clone", ["git", "clone", "-q", "--no-checkout", "--", spec.origin, "repo"], work),
            ("git checkout", ["git", "checkout", "-q", "--detach", spec.commit], repo),
            ("dvc pull", [*DVC, "pull"], repo),
            ("dvc exp run", [*DVC, "exp", "run", "-n", spec.name, *sets], repo),
            ("dvc exp push", [*DVC, "exp", "push", "origin", spec.name], repo),
        ]
        for step, cmd, cwd in steps:
            if step == "dvc exp run" and (reason := _linked(repo, spec.overrides)):
                break
            try:
                r = _run(cmd, cwd, STEP_TIMEOUT, env)
            except subprocess.TimeoutExpired:
                reason = f"{step}: no end after {STEP_TIMEOUT:.0f} s"
                break
            if r.returncode != 0:
                why = reason_of(r.stdout + "\n" + r.stderr)
                reason = why if step == "dvc exp run" else f"{step}: {why}"
                if step == "dvc exp push" and not _not_pushed(repo, spec, env):  # ref, then data
                    ref = exp_ref(spec.commit, spec.name)  # DVC's name alone: HEAD's run
                    remove = shlex.join(["git", "push", spec.origin, f":{ref}"])
                    reason += f"; its ref is on the origin without all its outputs: {remove}"
                break
        else:
            reason = _not_pushed(repo, spec, env)
    return Outcome(not reason, time.monotonic() - start, _node(), reason)


def _linked(repo: Path, overrides: list[str]) -> str:
    """Why a file the run's `-S` writes (params.yaml for a bare KEY) may not be written here:
    through a link, DVC would write into what it points at. `dvc pull` makes a tracked file a
    link into DVC's cache (cache.type hardlink or symlink), and a file system that ignores case
    reads `LNK/x.yaml` through a committed link `lnk`."""
    from dvc.utils.cli_parse import to_path_overrides

    for name in to_path_overrides(overrides):
        path = repo
        for part in Path(name).parts:
            path /= part
            if path.is_symlink():
                break
        else:
            if not (path.is_file() and path.stat().st_nlink > 1):  # a folder has 2 or more
                continue
        return f"-S {name}:...: a link here (into DVC's cache?); allowed: a file of its own"
    return ""


def exp_ref(commit: str, name: str) -> str:
    """Where DVC keeps experiment `name` of baseline `commit`."""
    return f"refs/exps/{commit[:2]}/{commit[2:]}/{name}"


def _not_pushed(repo: Path, spec: Spec, env: dict) -> str:
    """Why the run is not on the origin, if it is not: `dvc exp push` exits 0 with "No
    experiments to push" when another run of the name is there already."""
    ref = exp_ref(spec.commit, spec.name)
    here = _run(["git", "rev-parse", "-q", "--verify", ref], repo, 60, env).stdout.split()
    there = _run(["git", "ls-remote", "--", "origin", ref], repo, STEP_TIMEOUT, env).stdout.split()
    if here and there[:1] == here:
        return ""
    return f"dvc exp push: the origin's {spec.name} is not this run (it was there already)"


def _git(repo: Path, *args: str, check: bool = True) -> str:
    try:
        r = _run(["git", *args], repo, 300)
    except subprocess.TimeoutExpired:
        raise SweepError(f"git {' '.join(args)}: no answer in 300 s") from None
    if check and r.returncode != 0:
        raise SweepError(f"git {' '.join(args)}: {reason_of(r.stderr or r.stdout)}")
    return r.stdout.strip()


def resolve_origin(repo: Path, origin: str | None) -> tuple[str, str]:
    """(URL the tasks clone, what `dvc exp pull` here is given) for --origin or `origin`; a path
    made absolute, so the checks here and every task's clone mean the same repository."""
    if origin and origin.startswith("-"):
        raise SweepError(f"--origin {origin!r}: a git URL or path, not an option")
    if origin:
        url = _absolute(origin, Path.cwd())
        return url, url
    url = _git(repo, "remote", "get-url", "origin", check=False)
    if not url:
        raise SweepError("no --origin given and this repo has no git remote 'origin'")
    return _absolute(url, repo), "origin"


def _absolute(url: str, base: Path) -> str:
    """A local path made absolute against `base`; a URL as it is, by git's rule: `://`, or a
    colon before the first slash (ssh's `host:path`, `user@host:path`, an ssh-config alias)."""
    if "://" in url or ":" in url.split("/", 1)[0] or Path(url).is_absolute():
        return url
    return str((base / url).resolve())


def _check_on_origin(repo: Path, origin: str, commit: str, refs: list[list[str]]) -> None:
    """The tasks clone the origin: HEAD must be one of its refs or below one."""
    heads = {sha for sha, *_ in refs}
    if commit not in heads and not any(
        _run(["git", "merge-base", "--is-ancestor", commit, sha], repo, 60).returncode == 0
        for sha in heads
    ):
        raise SweepError(f"commit {commit[:7]} is not on {origin}: `git push` it first")


def run_name(given: str | None, commit: str, taken: set[str], runs: int) -> str:
    """NAME of the runs NAME-1 ... NAME-N: the one given, or the first free of sweep-<sha>,
    sweep2-<sha>, ...; never a name of an experiment of `commit` already made."""

    def free(name: str) -> bool:
        return not taken & {f"{name}-{i}" for i in range(1, runs + 1)}

    if given is not None:
        if not EXP_NAME.fullmatch(given):  # it reaches `dvc exp run -n`, which takes no `--`
            raise SweepError(
                f"-n {given!r}: not a run name; allowed: letters, digits, '.', '_' and '-', "
                "beginning with a letter or digit"
            )
        if not free(given):
            raise SweepError(
                f"-n {given}: experiments {given}-1 ... {given}-{runs} of commit {commit[:7]} "
                "exist already, here or on the origin; give another name"
            )
        return given
    names = (f"sweep{k if k > 1 else ''}-{commit[:7]}" for k in itertools.count(1))
    return next(name for name in names if free(name))


def _experiments(repo: Path, commit: str, origin_refs: list[list[str]]) -> set[str]:
    """The names of `commit`'s experiments here and on the origin."""
    prefix = exp_ref(commit, "")
    here = _git(repo, "for-each-ref", "--format=%(refname)", "--", prefix).splitlines()
    refs = [ref for *_, ref in origin_refs] + here
    return {ref.removeprefix(prefix) for ref in refs if ref.startswith(prefix)}


def _landed(
    repo: Path, origin_url: str, commit: str, specs: list[Spec], outcomes: dict[str, Outcome]
) -> tuple[list[str], list[str]]:
    """After an interrupt: the runs that landed, as their tasks said, and those on the origin
    whose tasks did not say (one may have pushed and not yet returned, or another sweep of the
    same name, begun while the names were free, may have pushed it: only its params tell)."""
    try:  # briefly: the user is waiting, and a second Ctrl-C is ignored
        r = _run(["git", "ls-remote", "--", origin_url], repo, LANDED_TIMEOUT)
        there = _experiments(repo, commit, [ln.split() for ln in r.stdout.splitlines()])
    except (subprocess.TimeoutExpired, SweepError):  # the origin cannot tell: what tasks said
        there = set()
    landed = [s.name for s in specs if s.name in outcomes and outcomes[s.name].ok]
    return landed, [s.name for s in specs if s.name not in outcomes and s.name in there]


def _interrupted_line(origin_here: str, landed: list[str], unsaid: list[str]) -> str:
    line = "sweep: interrupted; unfinished runs cancelled"
    if landed:
        pull = shlex.join(["dvc", "exp", "pull", origin_here, *landed])
        line += f"; those that landed: {printable(pull)}"
    if unsaid:
        line += (
            f"; on the origin but not reported by their tasks: {' '.join(unsaid)} (pull one and "
            "check its params in `dvc exp show`: another sweep of this name may have made it)"
        )
    return line


def _ray_init(address: str | None) -> Any:
    if not address:
        # A Ray of this machine only: on 127.0.0.1, not the machine's routable address (Ray
        # keeps a node on the loopback only where multi-node clusters are off, as on a Mac).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:
        raise SweepError("ray is not installed: pip install -e '.[cluster]'") from e
    kwargs: dict[str, Any] = {"address": address} if address else {"include_dashboard": False}
    # A Ray client server sometimes dies while it starts (a fork amid gRPC threads, a known Ray
    # race that docs/sharing.md cites): the connection fails at once; a retry works.
    tries = 3 if address and address.startswith("ray://") else 1
    for attempt in range(1, tries + 1):
        try:
            ray.init(logging_level=logging.WARNING, log_to_driver=False, **kwargs)
            return ray
        except Exception as e:
            ray.shutdown()
            if attempt == tries:
                where = address or "local"
                raise SweepError(f"cannot reach the Ray cluster at {where}: {e}") from e
            time.sleep(2)


def _address(text: str) -> str:
    """argparse's type for --address: Ray's own lines print it as it is."""
    if printable(text) != text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Ray address: allowed: ray://HEAD:10001, HEAD:6379 or auto"
        )
    return text


def _cpus(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        n = math.nan
    if not 0 < n < math.inf or round(n, 4) != n:  # Ray counts resources in steps of 0.0001
        raise argparse.ArgumentTypeError(
            f"{text!r}: allowed: a number of CPUs above 0, in steps of 0.0001"
        )
    return n


def _check_cpus(ray: Any, per_run: float) -> None:
    """A run that no node has the CPUs for would wait for ever: Ray queues it without a word."""
    most = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if per_run > most:
        ray.shutdown()
        raise SweepError(
            f"--num-cpus {per_run:g}: no node of the cluster has that many CPUs; allowed: up to "
            f"{most:g}, its largest node's"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "-S",
        "--set-param",
        dest="params",
        action="append",
        default=[],
        metavar="[FILE:]KEY=VALUES",
        help="a param and its values, as `dvc exp run -S`: comma lists and range()/choice() "
        "sweep; several -S make the cartesian product",
    )
    add(
        "--address",
        type=_address,
        help="the Ray cluster: ray://HEAD:10001 (Ray client), HEAD:6379 from a "
        "node of it, or auto; default: a local Ray instance on this machine",
    )
    add(
        "--origin",
        help="git URL every task clones and pushes its experiment to (default: the "
        "repo's `origin` remote); it must hold HEAD",
    )
    add(
        "-n",
        "--name",
        help="runs are NAME-1 ... NAME-N (default: sweep-<HEAD's short sha>, or sweep2-, ... "
        "when a sweep of HEAD has that name)",
    )
    add("--num-cpus", type=_cpus, default=1.0, help="CPUs Ray reserves for each run (default 1)")
    add(
        "--no-pull",
        action="store_true",
        help="do not `dvc exp pull` the finished runs into this repo",
    )


def _say(text: str, error: bool = False) -> None:
    """A line (or our own few), no escape or bidi character of a value in it reaching the
    terminal; a user's value is made one line with `printable` where it is put in."""
    print(printable_lines(text), file=sys.stderr if error else sys.stdout, flush=True)


def _summary(name: str, specs: list[Spec], outcomes: dict[str, Outcome], where: str) -> None:
    """Every run: ok or FAILED with its reason, its time and its params."""
    landed = sum(outcomes[s.name].ok for s in specs)
    _say(f"\nsweep {name}: {landed} of {len(specs)} runs landed on {where}")
    width = max(len(s.name) for s in specs)
    for s in specs:
        o = outcomes[s.name]
        _say(
            f"  {s.name:<{width}}  {'ok    ' if o.ok else 'FAILED'}  {o.seconds:5.1f} s  "
            f"{printable(' '.join(s.overrides))}" + ("" if o.ok else f"\n      {o.reason}")
        )


def _shutdown(ray: Any) -> None:
    """Ray's shutdown, a Ctrl-C or SIGHUP that comes meanwhile held until it ends (cut short, it
    left Ray's agents running), then the signals handled as before it. Ray sets SIGTERM back to
    the default early in its shutdown, for the whole process (its threads do not block it), so a
    SIGTERM then ends the sweep: callers say what the user must read first."""
    with atomic.signals_held():
        ray.shutdown()


def _stop(ray: Any, unfinished: Iterable[Any], line: Callable[[], str]) -> None:
    """After an interrupt (a second signal is ignored): the unfinished runs cancelled, `line()`
    said, then Ray shut down."""
    for ref in unfinished:
        ray.cancel(ref, force=True)
    _say(line(), error=True)
    _shutdown(ray)


def run(args: argparse.Namespace) -> int:
    """The sweep; 0 when every run landed, 1 when one failed, 2 before any run on a mistake."""
    atomic.handle_signals()  # SIGTERM as Ctrl-C, while Ray starts too: one line, no crash dump
    try:
        repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
        commit = _git(repo, "rev-parse", "HEAD")
        origin_url, origin_here = resolve_origin(repo, args.origin)
        runs = expand(args.params, repo, _links(repo, commit))
        on_origin = [ln.split() for ln in _git(repo, "ls-remote", "--", origin_url).splitlines()]
        _check_on_origin(repo, origin_url, commit, on_origin)
        if _git(repo, "status", "--porcelain", "--untracked-files=no"):
            _say(
                f"sweep: warning: uncommitted changes are not part of the sweep; every run "
                f"starts from commit {commit[:7]}",
                error=True,
            )
        name = run_name(args.name, commit, _experiments(repo, commit, on_origin), len(runs))
        specs = [Spec(f"{name}-{i}", ovs, origin_url, commit) for i, ovs in enumerate(runs, 1)]
        ray = _ray_init(args.address)
        atomic.handle_signals()  # again, at once: in place of the SIGTERM handler Ray's start set
        _check_cpus(ray, args.num_cpus)
    except SweepError as e:
        _say(f"sweep: error: {printable(str(e))}", error=True)
        return 2
    except (KeyboardInterrupt, SystemExit):  # SystemExit(15): Ray's handler, as Ray starts
        end_children()  # a Ray cut short in its start leaves its agents running a minute
        _say("sweep: interrupted before any run started", error=True)
        return 130

    start = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    pending: dict[Any, Spec] = {}  # Ray's task refs: Ctrl-C cancels those submitted so far
    try:
        _say(
            f"sweep: {len(specs)} runs of commit {commit[:7]} on {printable(origin_url)}, Ray "
            f"cluster of {len(ray.nodes())} node(s), {ray.cluster_resources().get('CPU', 0):g} "
            "CPU(s)"
        )
        task = ray.remote(num_cpus=args.num_cpus, max_retries=0)(run_one)
        for s in specs:
            pending[task.remote(s)] = s
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            try:
                o = ray.get(done[0])
            except Exception as e:  # the task or its worker died
                o = Outcome(False, reason=f"ray: {reason_of(str(e))}")
            outcomes[spec.name] = o
            _say(
                f"[{len(outcomes)}/{len(specs)}] {spec.name} {'ok' if o.ok else 'FAILED'} "
                f"{o.seconds:5.1f} s on {o.node or '?'}  {printable(' '.join(spec.overrides))}"
                + ("" if o.ok else f"\n    {o.reason}")
            )
    except KeyboardInterrupt:
        found = functools.partial(_landed, repo, origin_url, commit, specs, outcomes)
        _stop(ray, pending, lambda: _interrupted_line(origin_here, *found()))
        return 130
    landed = [s.name for s in specs if outcomes[s.name].ok]
    try:
        _summary(
            name, specs, outcomes, f"{printable(origin_url)} in {time.monotonic() - start:.1f} s"
        )
        _shutdown(ray)
        if landed and not args.no_pull:
            r = _run([*DVC, "exp", "pull", origin_here, *landed], repo, STEP_TIMEOUT)
            if r.returncode != 0:
                _say(f"sweep: error: dvc exp pull: {reason_of(r.stdout + r.stderr)}", error=True)
                return 1
            _say(f"pulled {len(landed)} runs into this repo: dvc exp show")
    except KeyboardInterrupt:
        pull = printable(shlex.join(["dvc", "exp", "pull", origin_here, *landed]))
        _say(
            "sweep: interrupted after the runs ended; "
            + (f"those that landed: {pull}" if landed else "none landed"),
            error=True,
        )
        return 130
    return 0 if len(landed) == len(specs) else 1
