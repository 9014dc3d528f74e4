"""Shared fixtures: the project root, the real MNIST in ../shared (when present), synthetic data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import golden
import pytest
from synthetic import write_fastai_tree

from mnist_basics import numerics

numerics.pin_env(1)  # before any test imports torch: the bytes the stages give

pytest_plugins = ["http_fixtures", "dvc_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The four original IDX .gz files; the test skips where ../shared/data/mnist is absent."""
    if not all((SHARED_MNIST / f).exists() for f in IDX_FILES):
        pytest.skip(f"real MNIST not found at {SHARED_MNIST} (needs the four IDX .gz files)")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def synthetic_37(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MNIST of 3s and 7s in fast.ai's layout."""
    root = tmp_path_factory.mktemp("synthetic_37")
    write_fastai_tree(root, [3, 7])
    return root


@pytest.fixture(scope="session")
def synthetic_three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MNIST of three digits in fast.ai's layout."""
    root = tmp_path_factory.mktemp("synthetic_three")
    write_fastai_tree(root, [1, 4, 8])
    return root


@pytest.fixture(scope="session")
def real_37_tensors(tmp_path_factory: pytest.TempPathFactory, real_mnist: Path) -> Path:
    """The real 3s and 7s, downloaded from the IDX folder (a user path source) and tensorized."""
    return golden.real_tensors([3, 7], tmp_path_factory.mktemp("real37"))


@pytest.fixture(scope="session")
def real_10_tensors(tmp_path_factory: pytest.TempPathFactory, real_mnist: Path) -> Path:
    """All ten digits of the real MNIST, as real_37_tensors."""
    return golden.real_tensors(golden.TEN, tmp_path_factory.mktemp("real10"))


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium for the offline-report checks: must be there in CI, else a skip."""
    from browser import CHROMIUM, available

    if not available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must install chromium")
        pytest.skip(f"{CHROMIUM} not found: `apt-get install chromium` to run the browser checks")
    return CHROMIUM


@pytest.fixture
def too_deep(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/deep, with 1,100 folders nested in it (os.walk recurses once per level). They are
    removed bottom up at the end: shutil.rmtree, so pytest's clean-up, recurses too."""
    top = deep = tmp_path / "deep"
    levels = [top]
    for _ in range(1100):
        deep /= "d"
        levels.append(deep)
    for level in levels:  # os.makedirs recurses too
        level.mkdir()
    yield top
    for level in reversed(levels):
        for f in level.iterdir():
            if not f.is_dir() or f.is_symlink():
                f.unlink()
        level.rmdir()
