"""What every stage script shares: params, logging, and a clean end on a mistake or a signal.

A stage ends in one of three ways:
  * it finishes (exit 0), its outputs written atomically;
  * a user's mistake (a param, a file, a source): one `<stage>: error: ...` message, exit 2;
  * Ctrl-C or SIGTERM: worker processes and subprocesses are killed at once, `finally` blocks and
    atomic writes remove their temporaries, one line says so, exit 130.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import popen_fork
from pathlib import Path
from typing import Any

from mnist_basics import params as params_mod
from mnist_basics.errors import UserError

log = logging.getLogger("mnist_basics")

LAST_RESORT = 5.0  # seconds a stage may take to clean up after a signal
_MAIN_PID = 0
_stopping = False
_deferred = 0
_signum = 0
_last_resort_started = threading.Event()


def _descendants(pid: int) -> list[int]:
    """Pids of every live process below `pid` (/proc; elsewhere multiprocessing's children)."""
    proc = Path("/proc")
    if not proc.is_dir():
        import multiprocessing

        return [p.pid for p in multiprocessing.active_children() if p.pid]
    parents: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _dead(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts: it runs no more code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def kill_children(wait: float = 1.0) -> list[int]:
    """SIGKILL every process this one started (pool workers, pip), and wait until they are dead,
    so none writes into a temporary folder while it is being removed. Returns their pids."""
    pids = _descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while Path("/proc").is_dir() and time.monotonic() < deadline:
        if all(_dead(pid) for pid in pids):
            break
        time.sleep(0.01)
    return pids


# Raising in these can leave a lock held or a count half-updated (queue.Queue.put: dvclive's
# Queue.join() at the end of its `with` then waits forever), and an exception raised in a fork
# callback is dropped. A signal that lands there is delivered again 10 ms later.
_UNSAFE_FILES = {m.__file__ for m in (queue, logging, popen_fork)}
_DEFERRALS = 50  # x 10 ms, then it is raised wherever it lands


def _in_unsafe_code(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename in _UNSAFE_FILES:
            return True
        frame = frame.f_back
    return False


def _again(signum: int) -> None:
    threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM: stop the work now, once; the stack's cleanup then runs undisturbed."""
    global _stopping, _deferred, _signum
    if os.getpid() != _MAIN_PID:
        # A forked pool worker (it inherits this handler; Ctrl-C reaches the whole group): its
        # parent kills it, and it must not die first, or the parent sees a broken pool, not this.
        return
    if _stopping:
        return  # a second Ctrl-C must not interrupt the cleanup of the first
    if _deferred < _DEFERRALS and _in_unsafe_code(frame):
        _deferred += 1
        _again(signum)
        return
    _stopping, _signum = True, signum
    kill_children()
    if not _last_resort_started.is_set():
        _last_resort_started.set()
        threading.Thread(target=_last_resort, daemon=True).start()
    raise KeyboardInterrupt(f"signal {signum}")


def _unraisable(hook: Any) -> None:
    """Python drops an exception raised where it cannot propagate (a finalizer, a callback):
    if that was our KeyboardInterrupt, the signal is delivered again so the stage still stops."""
    global _stopping
    if isinstance(hook.exc_value, KeyboardInterrupt) and _stopping and _signum:
        _stopping = False
        _again(_signum)
        return
    sys.__unraisablehook__(hook)


def _last_resort(after: float = LAST_RESORT) -> None:
    time.sleep(after)
    os.write(2, b"interrupted; cleanup is stuck, exiting without it (.*.tmp may remain); where:\n")
    faulthandler.dump_traceback(all_threads=True)
    os._exit(130)


def _exit(code: int) -> None:
    """Leave without the interpreter's slow teardown: the stack's cleanup has already run."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def check_device(p: dict) -> None:
    """A stage that reads train.device checks the device is on this machine before any work."""
    if "train" in p and p["train"]["device"] not in ("auto", "cpu"):  # those always resolve
        from mnist_basics import device  # imports torch, which takes seconds: only when needed

        device.resolve(p["train"]["device"])


def run_stage(name: str, sections: tuple[str, ...], main: Callable[[dict], None]) -> None:
    """Validate params, run `main(params)`, and turn a user's mistake into one line and exit 2.

    SIGTERM is treated like Ctrl-C, so `finally` blocks and atomic writes clean up either way.
    """
    global _MAIN_PID, _stopping, _deferred
    _MAIN_PID, _stopping, _deferred = os.getpid(), False, 0
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
    sys.unraisablehook = _unraisable
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        p = params_mod.load("params.yaml", sections)
        check_device(p)
        main(p)
    except BaseException as e:
        # After a signal, whatever surfaces (KeyboardInterrupt, or the pool the signal broke)
        # means "interrupted".
        if _stopping or isinstance(e, KeyboardInterrupt):
            print(f"{name}: interrupted; no partial output was left", file=sys.stderr)
            _exit(130)
        if isinstance(e, UserError):
            print(f"{name}: error: {e}", file=sys.stderr)
            _exit(2)
        # An OSError is the machine's, not ours: a full disk, a folder one may not write.
        if not isinstance(e, OSError) or os.environ.get("MNIST_BASICS_TRACEBACK"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"{name}: error: {where}{e.strerror or e} "
            "(set MNIST_BASICS_TRACEBACK=1 for the traceback)",
            file=sys.stderr,
        )
        _exit(1)
