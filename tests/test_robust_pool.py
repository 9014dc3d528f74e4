"""Issue 7, the worker pool: whatever stops it (a dead worker, an exception, a signal), it ends at
once and leaves no process or thread behind, so a stage's cleanup never waits on it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mnist_basics.parallel import run_chunks, workers

pytestmark = pytest.mark.skipif(workers() < 2, reason="the pool runs only with two cores")

# Chunks far bigger than a pipe's buffer, so one is always mid-write to a busy worker when another
# dies: with ProcessPoolExecutor on Python < 3.11.4 (cpython gh-94777) that write never ends, and
# the pool's shutdown waits on it for ever.
DYING_WORKER = """
import os, signal, sys, threading, time
from mnist_basics.parallel import run_chunks

def work(i, payload):
    if i == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.3)
    return i

chunks = [(i, bytes(1_000_000)) for i in range(12)]
t0 = time.monotonic()
try:
    run_chunks(work, chunks, [1000] * len(chunks), "test")
except BaseException as e:
    print("raised", type(e).__name__, f"{time.monotonic() - t0:.2f}", flush=True)
others = [t.name for t in threading.enumerate() if t.name not in ("MainThread", "tqdm_monitor")]
print("threads", *others, flush=True)
"""


def test_a_dying_worker_ends_the_pool_at_once() -> None:
    r = subprocess.run(
        [sys.executable, "-c", DYING_WORKER],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    raised, threads = r.stdout.splitlines()
    name, took = raised.split()[1:]
    assert name == "RuntimeError", r.stdout  # "a worker process died on chunk 0"
    assert float(took) < 2.0, r.stdout
    assert threads == "threads", r.stdout  # no pool thread left for the interpreter to wait on


def _fail_on_three(i: int) -> int:
    if i == 3:
        raise FileNotFoundError(2, "No such file or directory", f"/nowhere/{i}")
    time.sleep(0.05)
    return i * i


def _square(i: int) -> int:
    return i * i


def test_a_workers_exception_reaches_the_caller_as_itself() -> None:
    """run_stage turns an OSError into one line naming the file: the type and fields must
    survive the trip from the worker."""
    chunks = [(i,) for i in range(8)]
    with pytest.raises(FileNotFoundError) as info:
        run_chunks(_fail_on_three, chunks, [1000] * len(chunks), "test")
    assert info.value.filename == "/nowhere/3" and info.value.strerror


def test_results_come_back_in_chunk_order() -> None:
    chunks = [(i,) for i in range(40)]
    assert run_chunks(_square, chunks, [200] * len(chunks), "test") == [i * i for i in range(40)]
