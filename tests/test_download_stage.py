"""`python stages/download.py` as dvc runs it: params.yaml in, data/raw.zip out, no torch
imported."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mnist_basics.params import defaults


def _run(project: Path, root: Path, sources: list[str]) -> subprocess.CompletedProcess:
    project.mkdir(exist_ok=True)
    params = {
        "data": {"digits": [3, 7], "sources": sources, "timeout": 2},
        **{sec: values for sec, values in defaults().items() if sec != "data"},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-X", "importtime", str(root / "stages/download.py")]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)


def _imported(stderr: str) -> set[str]:
    return {
        ln.split("|")[-1].strip() for ln in stderr.splitlines() if ln.startswith("import time:")
    }


@pytest.mark.realdata
def test_stage_writes_the_book_counts_without_torch(
    tmp_path: Path, project_root: Path, real_mnist: Path
) -> None:
    done = _run(tmp_path / "p", project_root, [str(real_mnist)])
    assert done.returncode == 0, done.stderr[-2000:]
    raw = tmp_path / "p/data/raw.zip"
    with zipfile.ZipFile(raw) as zf:
        names = zf.namelist()
    assert all(n.startswith("mnist_sample/") and n.endswith(".png") for n in names)
    counts = Counter(n.rsplit("/", 1)[0].removeprefix("mnist_sample/") for n in names)
    assert counts == {"train/3": 6131, "train/7": 6265, "valid/3": 1010, "valid/7": 1028}
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw.zip"]
    modules = _imported(done.stderr)
    assert "mnist_basics.download" in modules and "numpy" in modules
    assert not any(m == "torch" or m.startswith("torch.") for m in modules)
    assert f"download: {real_mnist}: served" in done.stderr


def test_stage_fails_cleanly_when_no_source_serves(tmp_path: Path, project_root: Path) -> None:
    done = _run(tmp_path / "p", project_root, ["./nowhere", "./neither.tgz"])
    assert done.returncode == 2
    assert "download: error: no source delivered MNIST digits [3, 7]" in done.stderr
    assert "./nowhere: " in done.stderr and "./neither.tgz: " in done.stderr
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["params.yaml"]
