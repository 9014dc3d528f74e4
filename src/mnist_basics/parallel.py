"""Run a function over chunks in worker processes: tens of thousands of small PNGs are CPU work.

The pool is deliberately plain: no helper threads, one chunk in flight per worker, everything
sent and received by the calling thread. However it ends (done, a worker's exception, a dead
worker, Ctrl-C or SIGTERM), its workers are SIGKILLed and reaped right there, so nothing is left
writing into a temporary folder and nothing can keep a stage's cleanup waiting. (Python's
ProcessPoolExecutor can: on 3.11 before 3.11.4, once its workers are killed, its feeder thread
blocks for ever writing a chunk into their pipe and its shutdown waits on it, cpython gh-94777.)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from mnist_basics.progress import bar

T = TypeVar("T")

# Below this many items, starting processes costs more than it saves.
MIN_PARALLEL = 4000


def workers() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Consecutive slices of at most `size` items."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class RemoteTraceback(Exception):
    """A worker's traceback, shown as the cause of the exception it raised."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


def _serve(fn: Callable[..., Any], conn: Connection, parents_end: Connection) -> None:
    """A worker: fn(*chunk) for each chunk received, replying (True, result) or
    (False, exception, traceback), until the pool kills it or its parent is gone."""
    parents_end.close()  # inherited; closed, the parent's death reaches us as EOF
    with contextlib.suppress(EOFError, OSError):  # the pipe broke: the parent is gone
        while True:
            args = conn.recv()
            try:
                reply: tuple = (True, fn(*args))
            except Exception as e:
                reply = (False, e, traceback.format_exc())
            try:
                conn.send(reply)
            except Exception:  # an exception that does not pickle: its text still gets there
                conn.send((False, RuntimeError(repr(reply[1])), reply[-1]))


def _pool(
    fn: Callable[..., T], chunks: list[tuple], n: int, done: Callable[[int], None]
) -> list[T]:
    """fn(*chunk) for each chunk in n worker processes; done(i) as chunk i comes back."""
    procs: list[multiprocessing.Process] = []
    conns: list[Connection] = []
    try:
        for _ in range(n):
            mine, theirs = multiprocessing.Pipe()
            conns.append(mine)
            p = multiprocessing.Process(target=_serve, args=(fn, theirs, mine))
            p.start()
            procs.append(p)
            theirs.close()  # the worker's end is the worker's alone: its death is our EOF
        todo = iter(enumerate(chunks))
        busy: dict[Connection, int] = {}
        results: dict[int, T] = {}
        idle = list(conns)
        while True:
            for conn in idle:  # a worker is sent a chunk only while it waits for one
                if (item := next(todo, None)) is not None:
                    busy[conn] = item[0]
                    _talk(conn.send, item[0], item[1])
            if not busy:
                return [results[i] for i in range(len(chunks))]
            idle = wait(list(busy))
            for conn in idle:
                i = busy.pop(conn)
                reply = _talk(conn.recv, i)
                if not reply[0]:
                    raise reply[1] from RemoteTraceback(reply[2])
                results[i] = reply[1]
                done(i)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.join()
            p.close()
        for conn in conns:
            conn.close()


def _talk(op: Callable[..., Any], i: int, *args: Any) -> Any:
    """conn.send or conn.recv for chunk i; a broken pipe means its worker died."""
    try:
        return op(*args)
    except (EOFError, OSError):
        raise RuntimeError(f"a worker process died on chunk {i}") from None


def run_chunks(fn: Callable[..., T], chunks: list[tuple], sizes: list[int], desc: str) -> list[T]:
    """fn(*chunk) for each chunk, in processes when the work is big; results in chunk order.

    `sizes` (items per chunk) drives the progress bar.
    """
    total = sum(sizes)
    n = min(workers(), len(chunks))
    with bar(total=total, unit="img", desc=desc) as pb:
        if total < MIN_PARALLEL or n < 2:
            out = []
            for args, size in zip(chunks, sizes, strict=True):
                out.append(fn(*args))
                pb.update(size)
            return out
        return _pool(fn, chunks, n, lambda i: pb.update(sizes[i]))
