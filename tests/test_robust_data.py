"""Data: a user's broken source is named file by file; every source gives the same bytes.

The broken-folder case runs the real download stage (`python stages/download.py`), as dvc does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from http_fixtures import Server, tar_tree
from PIL import Image

from mnist_basics import params as params_mod
from mnist_basics.download import download
from mnist_basics.tensorize import tensorize

ROOT = Path(__file__).resolve().parents[1]


def _download_stage(project: Path, sources: list[str]) -> subprocess.CompletedProcess:
    p = params_mod.defaults()
    p["data"].update(sources=sources, timeout=2)
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    return subprocess.run(
        [sys.executable, str(ROOT / "stages/download.py")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_every_bad_file_of_a_user_folder_is_named(tmp_path: Path, synthetic_37: Path) -> None:
    tree = tmp_path / "mine"
    shutil.copytree(synthetic_37, tree)
    (tree / "train/3/0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupt
    Image.new("RGB", (28, 28)).save(tree / "train/3/900.png")  # colour
    Image.new("L", (32, 32)).save(tree / "train/7/901.png")  # wrong size
    Image.new("L", (28, 28)).save(tree / "valid/7/902.png")  # fine
    (tree / "valid/7/notes.txt").write_text("stray")  # not an image
    (tree / "train/x").mkdir()  # not a digit
    (tree / "train/x/1.png").write_bytes(b"x")
    for f in (tree / "valid/3").iterdir():  # an empty digit folder
        f.unlink()
    project = tmp_path / "project"
    project.mkdir()
    r = _download_stage(project, [str(tree)])
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    for expected in (
        "train/3/0.png: does not decode",
        "train/3/900.png: PNG 28x28 mode RGB",
        "train/7/901.png: PNG 32x32 mode L",
        "valid/7/notes.txt: not an <index>.png file",
        "train/x: not a digit folder",
        "valid/3: no images",
        "6 problem(s)",
    ):
        assert expected in r.stderr, (expected, r.stderr)
    assert "902.png" not in r.stderr
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]  # no data/, no *.tmp


def test_a_missing_split_is_named(tmp_path: Path, synthetic_37: Path) -> None:
    tree = tmp_path / "mine"
    shutil.copytree(synthetic_37, tree)
    shutil.rmtree(tree / "valid")
    project = tmp_path / "project"
    project.mkdir()
    r = _download_stage(project, [str(tree)])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "valid: missing" in r.stderr
    assert sorted(p.name for p in project.iterdir()) == ["params.yaml"]


def _tensors(tmp_path: Path, name: str, source: str, **kw) -> dict[str, bytes]:
    raw = tmp_path / name / "raw.zip"
    download([3, 7], [source], 5, raw, **kw)
    tensorize(raw, tmp_path / name / "tensors")
    return {p.name: p.read_bytes() for p in sorted((tmp_path / name / "tensors").iterdir())}


def test_every_kind_of_user_source_gives_the_same_tensor_bytes(
    tmp_path: Path, synthetic_37: Path, http_server: Server
) -> None:
    tgz = tmp_path / "mine.tgz"
    tgz.write_bytes(tar_tree(synthetic_37, "my_mnist"))
    http_server.files["robust_mine.tgz"] = tgz.read_bytes()
    want = _tensors(tmp_path, "folder", str(synthetic_37))
    assert sorted(want) == ["train.safetensors", "valid.safetensors"]
    for name, source in (
        ("tgz", str(tgz)),
        ("file_url", tgz.as_uri()),
        ("http", http_server.url("files", "robust_mine.tgz")),
    ):
        assert _tensors(tmp_path, name, source) == want, name


@pytest.mark.realdata
def test_real_idx_folder_and_its_fastai_tree_give_the_same_tensor_bytes(
    tmp_path: Path, real_mnist: Path
) -> None:
    want = _tensors(tmp_path, "idx", str(real_mnist))
    with zipfile.ZipFile(tmp_path / "idx/raw.zip") as zf:  # the PNGs written from the IDX files
        zf.extractall(tmp_path / "idx/tree")
    assert _tensors(tmp_path, "tree", str(tmp_path / "idx/tree/mnist_sample")) == want
    shutil.rmtree(tmp_path / "idx")  # 14,000 files: pytest keeps old temp dirs
    shutil.rmtree(tmp_path / "tree")


def test_a_plain_folder_name_is_a_path_and_a_typo_names_the_sources(
    tmp_path: Path, synthetic_37: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(synthetic_37, project / "mydigits")
    r = _download_stage(project, ["fastia", "mydigits"])
    assert r.returncode == 0, r.stderr
    assert "mydigits: served" in r.stderr
    assert "fastia: no such file or folder (nor a source name: fastai, mnist, pypi)" in r.stderr
    assert r.stderr.count("no such file or folder") == 1  # each reason said once
