"""What every stage script shares: params, logging, and a clean end on a mistake or a signal.

A stage ends in one of three ways:
  * it finishes (exit 0), its outputs written atomically;
  * a user's mistake (a param, a file, a source): one `<stage>: error: ...` line, exit 2;
  * Ctrl-C, SIGTERM or the death of the `dvc` that started it: the atomic writes remove their
    temporaries, one line says so, exit 130. The last good outputs stay where they were.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from mnist_basics import atomic, params
from mnist_basics.errors import UserError

log = logging.getLogger("mnist_basics")
PARENT_POLL = 0.5  # seconds between checks that the process which started the stage is alive
SHELLS = {"sh", "bash", "dash", "zsh"}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def watch_parent(poll: float = PARENT_POLL) -> None:
    """End the stage like Ctrl-C if `dvc` (past any shell it ran us through) dies, so no orphan
    trains on and writes its outputs later, racing the next run."""
    parents = psutil.Process().parents()
    parent = parents[0] if parents else None
    for p in parents:
        try:
            if p.name() not in SHELLS:
                parent = p
                break
        except psutil.Error:
            return
    if parent is None or parent.pid == 1:
        return

    def watch() -> None:
        while parent.is_running():  # is_running also compares the start time: no pid reuse
            threading.Event().wait(poll)
        log.info("the process that started this stage (pid %d) is gone; stopping", parent.pid)
        _thread.interrupt_main()

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def end_children() -> None:
    """Kill whatever this process started (pip, worker processes) and wait for it to go."""
    children = psutil.Process().children(recursive=True)
    for c in children:
        c.kill()
    psutil.wait_procs(children, timeout=2)


def _exit(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the cleanup has run; skip the interpreter's slow teardown of torch


def run_stage(
    name: str, main: Callable[[params.Params], None], outputs: Sequence[str | Path] = ()
) -> None:
    """Check params, clear the stale temporaries of `outputs`, run `main(params)`; turn a user's
    mistake into one line and exit 2, an interruption into exit 130."""
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        watch_parent()
        p = params.load("params.yaml")
        for out in outputs:
            atomic.clear_stale(Path(out))
        main(p)
    except KeyboardInterrupt:
        end_children()
        print(f"{name}: interrupted; the last good outputs are left as they were", file=sys.stderr)
        _exit(130)
    except UserError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        _exit(2)
    except OSError as e:  # the machine's, not ours: a full disk, a folder one may not write
        if os.environ.get("MNIST_BASICS_TRACEBACK"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"{name}: error: {where}{e.strerror or e} (MNIST_BASICS_TRACEBACK=1 shows the "
            "traceback)",
            file=sys.stderr,
        )
        _exit(1)
    _exit(0)
