"""Outputs appear whole or not at all: write to a temporary name beside the target, then rename.
And the one reader of the stages' safetensors files, with one clear line when one is broken."""

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mnist_basics.errors import BadFile, UserError, printable

log = logging.getLogger(__name__)


def remove(path: Path) -> None:
    """Remove a folder tree, or a file, link, fifo or socket, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def remove_old(path: Path, what: Path) -> None:
    """Remove the old version of output `what`, kept at `path` until its group was in place: a
    failure (a tree a `sudo dvc repro` made, a file a reader holds open on NFS) loses nothing,
    so it is a warning, and the next run's clear_stale tries again."""
    try:
        remove(path)
    except OSError as e:
        log.warning(
            "the old %s is left at %s (%s); remove it once nothing holds it open (with sudo if a "
            "sudo run made it)",
            what,
            path,
            e.strerror or e,
        )


def temporary(target: Path) -> Path:
    """A fresh name beside `target`, of the one shape clear_stale removes."""
    return target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")


@contextlib.contextmanager
def scratch_dir(target: Path) -> Iterator[Path]:
    """A work folder beside `target`, removed at the end (by clear_stale after a kill -9)."""
    tmp = temporary(target)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        remove(tmp)


def clear_stale(target: Path) -> None:
    """Remove the `.<name>.<random>.tmp` temporaries a `kill -9` left beside `target`; only names
    of exactly that shape: a user's `.<name>.my backup.tmp` stays."""
    for tmp in target.parent.glob(f".{target.name}.{'[0-9a-f]' * 16}.tmp"):
        remove_old(tmp, target)


# The renames a `together()` block holds back until it ends: (temporary, target), in order.
_held: list[list[tuple[Path, Path]]] = []
# The targets replaced so far: a stop from then on must not say the old outputs are kept.
replaced: list[Path] = []
# (target, where its old version is) for those a failed rename could not put back: the target
# stays new, or is missing where its own rename back failed too.
not_put_back: list[tuple[Path, Path]] = []


def _ready(tmp: Path, target: Path) -> None:
    """`tmp` as any file of the user's is (safetensors writes 0600), and `target` not a folder
    where a file goes: that is never swapped away."""
    if _real_dir(target) and not _real_dir(tmp):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    mask = os.umask(0)
    os.umask(mask)
    for f in [tmp] if not tmp.is_dir() else [p for p in tmp.rglob("*") if p.is_file()]:
        if not f.is_symlink():
            f.chmod(0o666 & ~mask)


def _swap_in(tmp: Path, target: Path) -> Path | None:
    """Put `tmp` at `target`, in one step where the file system can swap them; the old target
    is then under a temporary name, returned, to be put back or removed once the whole group is
    in. None if there was no target."""
    if not os.path.lexists(target):  # a broken link is a target too
        os.rename(tmp, target)
        return None
    if _exchange(tmp, target):  # the new one in place, the old one under tmp's name
        return tmp
    old = temporary(target)  # no renameat2 here (NFS, FUSE): the old one aside, not removed
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        try:
            os.rename(old, target)
        except OSError:  # neither version at `target`: where the old one is must be told
            not_put_back.append((target, old))
        raise
    return old


def _put_back(target: Path, old: Path | None) -> None:
    """Undo one _swap_in: the old version (None: there was none) at `target` again."""
    if old is None:
        remove(target)
    elif new := _swap_in(old, target):  # the new version, now under a temporary name
        remove_old(new, target)


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux's renameat2 RENAME_EXCHANGE): a folder cannot be renamed
    over a folder, and removing the old one first leaves a moment with neither. False where
    there is no such call; any other failure is raised, before anything is removed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if (err := ctypes.get_errno()) in (errno.ENOSYS, errno.EINVAL):  # no kernel or FS support
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_path(target: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """A temporary path beside `target`, renamed onto it if the block succeeds, else removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(target)
    if is_dir:
        tmp.mkdir()  # the user's usual mode, as for any folder they make (mkdtemp's is 0700)
    with together():  # alone, a group of one
        try:
            yield tmp
        except BaseException:
            remove(tmp)
            raise
        _held[-1].append((tmp, target))


def _mount_points() -> list[str]:
    """Where this process sees a file system or a bind mount (Linux's mountinfo: a bind from the
    same disk has its parent's device number, so `os.path.ismount` misses it); none elsewhere."""
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return []
    octal = re.compile(rb"\\([0-7]{3})")  # a space, tab, newline or backslash in a path
    return [os.fsdecode(octal.sub(lambda m: bytes([int(m[1], 8)]), ln.split()[4])) for ln in lines]


def _refuse_mount(target: Path, mount_points: list[str]) -> None:
    """An output that is a mount point (a container's volume) can be neither swapped nor renamed
    over, and one in a folder output would be emptied with the old folder: said before any
    output of the group is replaced. A link is replaced itself, wherever it points."""
    if target.is_symlink():
        return
    real = os.path.realpath(target)
    mounts = [m for m in mount_points if m == real or m.startswith(real.rstrip("/") + "/")]
    if os.path.ismount(target) or real in mounts:
        what = "a mount point"
    elif mounts:
        what = f"a folder that holds a mount point ({mounts[0]})"
    else:
        return
    raise UserError(
        f"{printable(str(target))}: {what}, which a run cannot replace (it writes beside it and "
        "renames); mount the folder above it instead (no output was replaced)"
    )


def _refuse_foreign(old: Path, new: Path) -> None:
    """A folder output is replaced whole: a file in it its stage did not write (a user's notes),
    or an empty folder (another mount namespace's mount point: a container's volume, detached
    with it), stops the run instead, as in `dvc checkout`. Checked just before the renames."""
    if new.is_dir() and old.is_file() and not old.is_symlink():  # swapped away, it would go
        raise UserError(
            f"{printable(str(old))}: a file where this stage writes a folder; move it elsewhere "
            "(no output was replaced)"
        )
    if not (new.is_dir() and old.is_dir() and not old.is_symlink()):
        return
    for top, dirs, names in os.walk(old):
        kept = [d for d in dirs if os.path.islink(p := os.path.join(top, d)) or not os.listdir(p)]
        for name in names + kept:
            path = Path(top, name)
            shown = printable(str(path))  # a user's name: it forges no line
            if _real_dir(theirs := new / path.relative_to(old)) and not _real_dir(path):
                raise UserError(
                    f"{shown}: a file where this stage writes a folder, in its output folder "
                    f"{old}; move it elsewhere (no output was replaced)"
                )
            if not os.path.lexists(theirs):
                what, fix = "a file", "move it elsewhere"
                if path.is_dir() and not path.is_symlink():
                    what, fix = "a folder", "remove it (or unmount what is mounted on it)"
                raise UserError(
                    f"{shown}: not {what} this stage writes, in its output folder {old}, which "
                    f"a run replaces whole; {fix} (no output was replaced)"
                )


@contextlib.contextmanager
def together() -> Iterator[None]:
    """The outputs a block writes with `atomic_path` all replace their targets, or none does;
    inside another such block, when that one ends."""
    if _held:
        yield
        return
    held: list[tuple[Path, Path]] = []
    _held.append(held)
    swapped: list[tuple[Path, Path | None]] = []  # (target, where its old version is)
    try:
        yield
        mounts = _mount_points()  # read once for the group
        for tmp, target in held:  # every output, before any rename
            _refuse_mount(target, mounts)
            _refuse_foreign(target, tmp)
        with signals_held():  # a signal that comes meanwhile is raised once all are renamed
            try:
                while held:
                    _ready(*held[0])
                    swapped.append((held[0][1], _swap_in(*held[0])))
                    replaced.append(held.pop(0)[1])
            except BaseException:  # one failed after others (overlayfs' EXDEV): all put back
                while swapped:
                    try:
                        _put_back(*swapped[-1])
                    except OSError:  # what stays new is in `replaced`, told with the first error
                        not_put_back.extend((t, old) for t, old in swapped if old is not None)
                        break
                    replaced.remove(swapped.pop()[0])
                raise
            for target, old in swapped:  # all in place: the old versions can go
                if old is not None:
                    remove_old(old, target)
    except BaseException:
        for tmp, _ in held:
            with contextlib.suppress(OSError):  # the error that brought us here is the one told
                remove(tmp)
        raise
    finally:
        _held.remove(held)


# Ctrl-C and SIGTERM, handled one way for the whole process: the stage runner installs the handler,
# and an output's renames hold it back. None outside `signals_held()`; inside, what came meanwhile.
_held_signals: list[int] | None = None
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # a closed terminal's too


# Ignored when the process began (nohup's SIGHUP, SIGINT in a script's `cmd &`): left so, as
# Python itself leaves an ignored SIGINT.
_IGNORED = {s for s in SIGNALS if signal.getsignal(s) == signal.SIG_IGN}


def _on_signal(signum: int, frame: object) -> None:
    """The first Ctrl-C or SIGTERM raises KeyboardInterrupt (after the renames under way); the
    next (a job manager's SIGTERM after its SIGINT) is ignored: it cannot break the cleanup."""
    if _held_signals is not None:
        _held_signals.append(signum)
        return
    ignore_signals()
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore(signum: int, frame: object) -> None:
    """Nothing: SIG_IGN itself, set while a second signal is pending, has Python raise OSError
    ("Signal 15 ignored due to race condition") with a traceback."""


def ignore_signals() -> None:
    """From now on Ctrl-C, SIGTERM and SIGHUP do nothing."""
    handle_signals(_ignore)


def handle_signals(handler: Callable[[int, Any], None] | signal.Handlers = _on_signal) -> None:
    for s in SIGNALS:
        if s not in _IGNORED:
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM (and the stop when `dvc` dies) wait until the block ends: a folder
    output is never left removed and not yet replaced. Outside a stage, ours stands in."""
    global _held_signals
    if threading.current_thread() is not threading.main_thread() or _held_signals is not None:
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    handle_signals()
    _held_signals = []
    failed = False
    try:
        yield
    except BaseException:
        failed = True  # the error is what the stage tells; the signal would put it out of sight
        raise
    finally:
        got, _held_signals = _held_signals, None
        for s, handler in old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if got and not failed:
            signal.raise_signal(got[0])


def write_bytes(target: str | Path, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode())


def write_new(target: Path, data: bytes) -> None:
    """Write `data` to `target` whole, never over a file: a hard link, unlike a rename, fails."""
    tmp = temporary(target)
    try:
        tmp.write_bytes(data)
        os.link(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file, else BadFile: looked at before it is
    opened (opening a device may act: a tape rewinds), and again after (it may have changed)."""
    not_regular = "not a regular file (a folder, fifo, socket or device)"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BadFile(path, not_regular)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a fifo: no wait
    except OSError as e:
        raise BadFile(path, (e.strerror or type(e).__name__).lower()) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadFile(path, not_regular)
    return os.fdopen(fd, "rb")


def read_capped(path: Path, limit: int) -> tuple[int, bytes]:
    """A regular file's bytes from one open, none past `limit` or of a file that says it is empty
    (as /proc's do: reading some has effects), and the larger of its size and what was read (a
    file may grow meanwhile)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if 0 < size <= limit else b""
    return max(size, len(data)), data


MAX_SAFETENSORS = 256 << 20  # of any one file; all of MNIST as tensors is 55 MB
MAX_SAFETENSORS_HEADER = 1 << 20  # a stage's is under 4 KiB; one of 70 MB took 20 s and 1.8 GB


def read_safetensors(
    path: Path, what: str, stage: str, needs: tuple[str, ...] = (), framework: str = "pt"
) -> tuple[dict[str, Any], dict[str, str]]:
    """The arrays and metadata of a safetensors file `stage` writes; one line if it is not. Read
    from one open: `safe_open` opens the path again for the data, and a rename in between would
    pair this file's header with another's data."""
    from safetensors import SafetensorError

    if framework == "pt":
        from safetensors.torch import load
    else:
        from safetensors.numpy import load
    try:
        size, data = read_capped(path, MAX_SAFETENSORS)
    except BadFile as e:
        if isinstance(e.__cause__, FileNotFoundError):
            raise UserError(f"{path}: missing; run `dvc repro {stage}` first") from None
        raise
    try:
        if size > MAX_SAFETENSORS:
            raise ValueError(f"{size:,} bytes, more than the {MAX_SAFETENSORS:,} it may have")
        if (n := int.from_bytes(data[:8], "little")) > MAX_SAFETENSORS_HEADER:
            raise ValueError(f"a header of {n:,} bytes, more than {MAX_SAFETENSORS_HEADER:,}")
        arrays = load(data)  # checks the header, metadata included, before the JSON read below
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        if missing := [k for k in needs if k not in arrays]:
            raise ValueError(f"no {', '.join(missing)} in it")
        return arrays, meta
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as e:
        why = f"not {what} file as the {stage} stage writes it ({e or type(e).__name__})"
        raise BadFile(path, why, f"`dvc repro -f {stage}` writes it again") from None
