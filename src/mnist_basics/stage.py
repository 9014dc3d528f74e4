"""What every stage script shares: params, logging, and a clean end on a mistake or a signal:
exit 0 with its outputs written atomically; 2 with one `<stage>: error: ...` line on a user's
mistake; 130 on Ctrl-C, SIGTERM or its `dvc`'s death, the last good outputs kept."""

import _thread
import contextlib
import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import psutil

from mnist_basics import atomic
from mnist_basics.errors import UserError, printable, printable_lines

if TYPE_CHECKING:
    from mnist_basics.params import Params

log = logging.getLogger("mnist_basics")
SHELLS = {"sh", "bash", "dash", "zsh"}


def starter() -> psutil.Process | None:
    """The process that started this stage, past any shell it ran us through: `dvc`, or a
    terminal's. Init (pid 1) when dvc died before we looked and handed us to it."""
    try:
        parents = psutil.Process().parents()
        return next((p for p in parents if p.name() not in SHELLS), parents[0] if parents else None)
    except psutil.Error:
        return None


STARTER = starter()  # at import, before params' imports: dvc may die while the stage starts
# Also at import (stages/_checkout.py imports this module first): any file the stage depends on
# that is newer was edited after Python began to read the stage's code.
STARTED_NS = time.time_ns()


def watch_parent() -> None:
    """End the stage like Ctrl-C if `dvc` (past any shell it ran us through) dies, so no orphan
    trains on and writes its outputs later, racing the next run."""
    parent = STARTER
    if parent is None:
        return
    if parent.pid == 1:  # init outlives us; unless it is dvc or a shell (a container's), we
        with contextlib.suppress(psutil.Error):  # were handed to it: an orphan already
            if parent.name() not in SHELLS and "dvc" not in " ".join(parent.cmdline()):
                log.info("the process that started this stage is gone; stopping")
                _thread.interrupt_main()
        return

    def watch() -> None:
        try:
            while parent.is_running():  # is_running compares the start time: no pid reuse
                with contextlib.suppress(psutil.TimeoutExpired):
                    parent.wait(timeout=0.5)
        except (psutil.Error, OSError):
            return
        log.info("the process that started this stage (pid %d) is gone; stopping", parent.pid)
        _thread.interrupt_main()

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def end_children() -> None:
    """Kill whatever this process started (pip, worker processes) and wait for it to go."""
    children = psutil.Process().children(recursive=True)
    for c in children:
        with contextlib.suppress(psutil.NoSuchProcess):  # it may end on its own meanwhile
            c.kill()
    psutil.wait_procs(children, timeout=2)


def _exit(code: int, line: str = "") -> None:
    """Print `line`, then end at once: the cleanup has run; skip the slow teardown of torch."""
    atomic.ignore_signals()
    if line:
        print(printable_lines(line), file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Printable(logging.Formatter):
    """A stage's log lines as its error line: no name from a source or archive reaches the
    terminal as an escape (OSC 52 writes the clipboard) or a forged line."""

    def format(self, record: logging.LogRecord) -> str:
        return printable_lines(super().format(record))


class Stamp(NamedTuple):
    """What tells a file's bytes changed (inode, mtime, size) and when: ctime, which no tool sets
    back (`cp -p` does mtime); mtime for a file hard-linked to DVC's cache: links move ctime."""

    inode: int
    mtime: int
    size: int
    changed: int


def stage_deps(name: str) -> list[str]:
    """The deps of stage `name` in dvc.yaml; none outside a DVC project."""
    from ruamel.yaml import YAML, YAMLError

    try:
        deps = YAML(typ="safe").load(Path("dvc.yaml").read_text())["stages"][name]["deps"]
    except (OSError, YAMLError, KeyError, TypeError):
        return []
    return [d for d in deps if isinstance(d, str)]


def deps_stamps(deps: list[str]) -> dict[str, Stamp]:
    """A Stamp of each file of `deps` (folders walked): DVC hashes them only once the stage has
    ended, to write dvc.lock."""
    stamps = {}
    for dep in deps:
        for top, dirs, files in os.walk(dep) if os.path.isdir(dep) else [("", [], [dep])]:
            dirs[:] = [d for d in dirs if d != "__pycache__"]  # Python's, which DVC ignores
            for path in (os.path.join(top, f) for f in files):
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    changed = st.st_ctime_ns if st.st_nlink == 1 else st.st_mtime_ns
                    stamps[path] = Stamp(st.st_ino, st.st_mtime_ns, st.st_size, changed)
    return stamps


def edited(before: dict[str, Stamp], now: dict[str, Stamp]) -> list[str]:
    """The deps edited since `before` was taken, or after the stage began to read its code."""
    moved = {f for f in before.keys() | now.keys() if before.get(f, ())[:3] != now.get(f, ())[:3]}
    return sorted(moved | {f for f, stamp in now.items() if stamp.changed > STARTED_NS})


def run_stage(
    name: str, main: Callable[["Params"], None], outputs: Sequence[str | Path] = ()
) -> None:
    """Check params, clear the stale temporaries of `outputs`, run `main(params)`, then exit."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Printable(f"{name}: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    atomic.handle_signals()
    try:
        watch_parent()
        from mnist_basics import params  # pydantic: after the watch has started

        deps = stage_deps(name)
        p, stamps = params.load("params.yaml"), deps_stamps(deps)
        for out in outputs:
            atomic.clear_stale(Path(out))
        with atomic.together():  # no output replaced before params and deps are checked again
            main(p)
            changed = edited(stamps, deps_stamps(deps))  # DVC reads both again for dvc.lock
            if params.load("params.yaml") != p:
                changed.insert(0, "params.yaml")
            if changed:
                raise UserError(
                    f"{changed[0]} changed while the stage ran: dvc.lock would record it beside "
                    "outputs made without it, so no output was replaced; run it again"
                )
    except KeyboardInterrupt:
        end_children()
        if atomic.replaced:
            _exit(
                130,
                f"{name}: interrupted as its outputs were replaced: all are new, but "
                "dvc.lock does not record them; run it again",
            )
        _exit(130, f"{name}: interrupted; the last good outputs are left as they were")
    except UserError as e:
        _exit(2, f"{name}: error: {e}")
    except OSError as e:  # the machine's, not ours: a full disk, a folder one may not write
        if os.environ.get("MNIST_BASICS_TRACEBACK"):
            raise
        where = f"{printable(str(e.filename))}: " if e.filename else ""
        hint = "(MNIST_BASICS_TRACEBACK=1 shows the traceback)"
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):  # a write names no file
            hint = (
                "while writing (a full disk or a file-size limit); the last good outputs are left"
            )
        if atomic.replaced or atomic.not_put_back:  # a rename failed, and putting back too
            hint = "run it again"
            if atomic.replaced:
                hint = f"after {', '.join(map(str, atomic.replaced))} were replaced; {hint}"
            if kept := atomic.not_put_back:
                olds = ", ".join(f"{target} at {old}" for target, old in kept)
                hint += f" (the old versions are left: {olds}; the next run removes them)"
        _exit(1, f"{name}: error: {where}{e.strerror or e} {hint}")
    _exit(0)
