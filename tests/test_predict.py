"""`mnist-basics predict`: MNIST's own preprocessing, the table and JSON, --show, --rev, and one
clear line (exit 2, no traceback) for each kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from use_models import DVC, revisions_repo, write_model

from mnist_basics import cli as console
from mnist_basics import preprocess
from mnist_basics.preprocess import ImageError, prepare, to_mnist


def seven(
    size=(300, 200), width=14, fg="black", bg="white", mode="RGB", at=(60, 30)
) -> Image.Image:
    """A 7 drawn off-centre with a pen of `width` pixels."""
    im = Image.new(mode, size, bg)
    x, y = at
    ImageDraw.Draw(im).line([(x, y), (x + 90, y), (x + 35, y + 140)], fill=fg, width=width)
    return im


# --- preprocessing -------------------------------------------------------------------------


def test_mnist_like_image_is_used_as_is() -> None:
    rng = np.random.default_rng(0)
    a = np.zeros((28, 28), np.uint8)
    a[5:23, 9:19] = rng.integers(0, 256, (18, 10))
    p = to_mnist(Image.fromarray(a))
    assert p.as_is and not p.inverted
    assert np.array_equal(p.pixels, a)
    assert np.array_equal(p.x, a.reshape(784).astype(np.float32) / 255)


def test_dark_on_light_off_centre_is_brought_to_mnist_form() -> None:
    p = to_mnist(seven())
    assert not p.as_is and p.inverted
    a = p.pixels.astype(np.float64)
    assert a.shape == (28, 28) and a.max() > 200
    assert a[0].max() == a[-1].max() == a[:, 0].max() == a[:, -1].max() == 0  # black border
    ys, xs = np.nonzero(a > 0.25 * 255)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert 19 <= h <= 21  # the longer side fits the 20x20 box
    assert abs(w / h - (90 + 14) / (140 + 14)) < 0.12  # aspect ratio kept
    cy, cx = preprocess.centre_of_mass(a)
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5


def test_placement_does_not_matter() -> None:
    """The same 7 anywhere on the page, at any size, gives (nearly) the same 28x28 image."""
    a = to_mnist(seven(at=(20, 20))).pixels.astype(int)
    b = to_mnist(seven(size=(500, 400), at=(300, 200))).pixels.astype(int)
    assert np.abs(a - b).mean() < 2


def test_light_ink_on_dark_is_not_inverted_and_transparency_is_handled() -> None:
    p = to_mnist(seven(fg="white", bg="black"))
    assert not p.inverted
    rgba = seven(fg=(0, 0, 0, 255), bg=(0, 0, 0, 0), mode="RGBA")  # dark ink, transparent page
    q = to_mnist(rgba)
    assert q.inverted
    assert np.abs(p.pixels.astype(int) - q.pixels.astype(int)).mean() < 2


def test_blank_page_has_no_ink() -> None:
    with pytest.raises(ImageError, match="no ink"):
        to_mnist(Image.new("L", (200, 200), 250))
    noisy = np.full((100, 100), 230, np.uint8) + np.random.default_rng(0).integers(0, 8, (100, 100))
    with pytest.raises(ImageError, match="no ink"):
        to_mnist(Image.fromarray(noisy.astype(np.uint8)))


def test_too_large_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "big.png"
    Image.new("1", (8000, 6000), 1).save(big)  # 48 megapixels, a few kB of PNG
    loads = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1))
    with pytest.raises(ImageError, match="too large"):
        prepare(big)
    assert loads == []


def test_pillow_decompression_bomb_is_too_large(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "bomb.png"
    Image.new("L", (100, 100), 255).save(f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: over twice that
    with pytest.raises(ImageError, match="too large"):
        prepare(f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # between once and twice: the warning
    with pytest.raises(ImageError, match="too large"):
        prepare(f)


def test_not_an_image(tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    f.write_text("not a png")
    with pytest.raises(ImageError, match=r"^not a PNG, JPEG, GIF, BMP or WebP image$"):
        prepare(f)
    trunc = tmp_path / "t.png"
    seven().save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:200])
    with pytest.raises(ImageError):
        prepare(trunc)


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """A folder with a ten-digit model at models/model.safetensors, as the current directory."""
    write_model(tmp_path / "models" / "model.safetensors", list(range(10)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = console.main(["predict", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_table_json_and_show(workspace: Path, capsys) -> None:
    imgs = workspace / "imgs"
    imgs.mkdir()
    seven().save(imgs / "seven.jpg")
    seven(fg="white", bg="black").save(imgs / "seven_dark.png")
    (imgs / "notes.txt").write_text("skipped in a folder")
    code, out, err = cli(capsys, "imgs", "--show", "seen")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["image", "digit", *(f"P({d})" for d in range(10))]
    assert len(lines) == 3 and lines[1].startswith("imgs/seven.jpg")
    assert sorted(p.name for p in (workspace / "seen").iterdir()) == [
        "imgs_seven.png",
        "imgs_seven_dark.png",
    ]
    seen = np.asarray(Image.open(workspace / "seen" / "imgs_seven.png"))
    assert np.array_equal(seen, prepare(imgs / "seven.jpg").pixels)

    code, out, err = cli(capsys, "--json", "imgs/seven.jpg")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"]["source"] == "workspace"
    assert doc["model"]["spec"]["digits"] == list(range(10))
    [img] = doc["images"]
    probs = img["probabilities"]
    assert list(probs) == [str(d) for d in range(10)]
    assert abs(sum(probs.values()) - 1) < 1e-5
    assert img["digit"] == int(max(probs, key=probs.get))
    assert img["preprocessed"] and img["inverted"]


def test_two_digit_model_sigmoid_is_p_first(tmp_path: Path, monkeypatch, capsys) -> None:
    from mnist_basics.models import load_model

    write_model(tmp_path / "models" / "model.safetensors", [3, 7])
    monkeypatch.chdir(tmp_path)
    seven().save("s.png")
    code, out, _ = cli(capsys, "--json", "s.png")
    assert code == 0
    img = json.loads(out)["images"][0]
    model, _ = load_model(Path("models/model.safetensors"))
    logit = model(torch.from_numpy(prepare(Path("s.png")).x)[None])[0, 0].item()
    p3 = 1 / (1 + np.exp(-logit))
    assert list(img["probabilities"]) == ["3", "7"]
    assert img["probabilities"]["3"] == pytest.approx(p3, abs=1e-6)
    assert img["probabilities"]["7"] == pytest.approx(1 - p3, abs=1e-6)
    assert img["digit"] == (3 if logit > 0 else 7)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("hello"), "not a PNG, JPEG, GIF, BMP or WebP image"),
        (lambda p: Image.new("RGB", (120, 90), "white").save(p, "PNG"), "no ink found"),
        (lambda p: Image.new("1", (9000, 5000), 1).save(p, "PNG"), "too large"),
        (lambda p: seven().save(p, "TIFF"), "not a PNG, JPEG, GIF, BMP or WebP image"),
    ],
    ids=["not-an-image", "empty-page", "too-large", "tiff"],
)
def test_bad_input_is_one_line_and_exit_2(workspace: Path, capsys, make, message) -> None:
    make(workspace / "bad.png")
    seven().save(workspace / "good.png")
    code, out, err = cli(capsys, "bad.png", "good.png")
    assert code == 2
    assert err.splitlines() == [err.splitlines()[0]]
    assert err.startswith("predict: error: bad.png: ") and message in err
    assert "good.png" in out  # the good one is still predicted


def test_missing_path_and_missing_model(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    seven().save("s.png")
    code, _, err = cli(capsys, "s.png")
    assert code == 2
    assert err.strip() == (
        "predict: error: models/model.safetensors: no model; run `dvc repro` (or `dvc pull`) first"
    )
    write_model(tmp_path / "models" / "model.safetensors", [3, 7])
    code, _, err = cli(capsys, "nothere.png", "s.png")
    assert code == 2
    assert err.strip() == "predict: error: nothere.png: no such file or folder"


def test_not_a_model(workspace: Path, capsys) -> None:
    (workspace / "models" / "model.safetensors").write_bytes(b"garbage")
    seven().save("s.png")
    code, _, err = cli(capsys, "s.png")
    assert code == 2
    assert err.startswith("predict: error: models/model.safetensors: not a model file as the train")
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def revrepo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return revisions_repo(tmp_path_factory.mktemp("revs") / "repo")


def test_rev_reads_that_revisions_model_without_checkout(
    revrepo: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(revrepo)
    seven().save(revrepo / "s.png")
    before = (revrepo / "models" / "model.safetensors").read_bytes()
    digits = {}
    for rev in ("v1", "main", "HEAD~1", None):
        code, out, err = cli(capsys, "--json", "s.png", *(["--rev", rev] if rev else []))
        assert code == 0, err
        doc = json.loads(out)
        assert doc["model"]["source"] == (rev or "workspace")
        digits[rev] = doc["model"]["spec"]["digits"]
    assert digits == {
        "v1": list(range(10)),
        "HEAD~1": list(range(10)),
        "main": [3, 7],
        None: [3, 7],
    }
    assert (revrepo / "models" / "model.safetensors").read_bytes() == before
    assert (
        subprocess.run(
            ["git", "status", "--porcelain"], cwd=revrepo, capture_output=True, text=True
        ).stdout.strip()
        == "?? s.png"
    )


@pytest.mark.parametrize(
    "rev",
    ["no-such-rev", "HEAD:models", "HEAD^{tree}", "BLOB", "x" * 1024, "--output=o", "a\nb", ""],
    ids=["unknown", "tree-path", "tree", "blob-sha", "1024-chars", "option", "newline", "empty"],
)
def test_a_rev_that_is_not_a_commit(revrepo: Path, monkeypatch, capsys, rev: str) -> None:
    monkeypatch.chdir(revrepo)
    seven().save(revrepo / "s.png")
    if rev == "BLOB":
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD:models/model.safetensors.dvc"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    code, out, err = cli(capsys, f"--rev={rev}", "s.png")
    assert code == 2 and out == ""
    shown = (rev if len(rev) <= 80 else rev[:77] + "...").replace("\n", "\\n")
    assert err == (
        f"predict: error: --rev {shown}: unknown revision; it must be a commit of this "
        "repository (a branch, tag, DVC experiment or commit sha)\n"
    )
    assert not (revrepo / "o").exists()


def test_a_rev_outside_a_git_repository_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    seven().save(tmp_path / "s.png")
    code, out, err = cli(capsys, "--rev", "main", "s.png")
    assert (code, out) == (2, "")
    assert err == f"predict: error: --rev main: {tmp_path.resolve()} is not in a git repository\n"


def test_a_revisions_unreadable_model_is_named_by_revision(
    tmp_path: Path, revrepo: Path, monkeypatch, capsys
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(revrepo, repo, symlinks=True)
    model = repo / "models" / "model.safetensors"
    model.unlink()
    model.write_bytes(b"garbage")
    for cmd in ([DVC, "add", "-q", str(model)], ["git", "commit", "-qam", "garbage"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    monkeypatch.chdir(repo)
    seven().save(repo / "s.png")
    code, _, err = cli(capsys, "--rev", "main", "s.png")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("predict: error: main: models/model.safetensors is not a readable model")
    assert str(tmp_path) not in err and "/tmp" not in err, err


def test_as_a_process_no_traceback(workspace: Path) -> None:
    (workspace / "bad.png").write_text("x")
    r = subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "predict", "bad.png"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr == "predict: error: bad.png: not a PNG, JPEG, GIF, BMP or WebP image\n"
