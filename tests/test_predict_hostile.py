"""`mnist-basics predict` against hostile input and careless use: it overwrites nothing, hangs on
nothing, reads photos upright, preprocesses what is not in MNIST's own form, prints names that
cannot forge a line, and refuses models it cannot trust, each with one line and the rest done."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image, ImageDraw
from use_models import glyph_data, write_model

from mnist_basics import atomic
from mnist_basics import cli as console
from mnist_basics.models import ModelSpec, build_model, save_tensors
from mnist_basics.predict import shown_paths
from mnist_basics.preprocess import ImageError, in_mnist_form, prepare, to_mnist


def seven(size=(300, 200), fg="black", bg="white", width=14, at=(60, 30)) -> Image.Image:
    im = Image.new("L", size, bg)
    x, y = at
    ImageDraw.Draw(im).line([(x, y), (x + 90, y), (x + 35, y + 140)], fill=fg, width=width)
    return im


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    write_model(path, list(range(10)))
    return path.read_bytes()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch, model_bytes: bytes) -> Path:
    """A folder with a ten-digit model at models/model.safetensors, as the current directory."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.safetensors").write_bytes(model_bytes)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = console.main(["predict", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def process(cwd: Path, *args: str, env: dict | None = None, unprivileged: bool = False):
    """The command as its own process, its output as bytes. `unprivileged`: as root, without
    the capabilities that let root read any file (so chmod 000 denies, as it does a user)."""
    cmd = [sys.executable, "-m", "mnist_basics.cli", "predict", *args]
    if unprivileged and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root, and no setpriv to drop root's right to read any file")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=300, env=env)


# --- --show never overwrites, never writes outside DIR ----------------------------------------


def test_show_onto_the_input_itself_is_refused_up_front(workspace: Path, capsys) -> None:
    seven().convert("RGB").save("any.jpg")
    shutil.copy("any.jpg", "mydigit.png")  # a JPEG named .png, as `cp any.jpg mydigit.png`
    before = Path("mydigit.png").read_bytes()
    code, out, err = cli(capsys, "--show", ".", "mydigit.png")
    assert code == 2 and out == ""
    assert err == (
        "predict: error: --show: mydigit.png exists; not overwritten (give a new or empty folder)\n"
    )
    assert Path("mydigit.png").read_bytes() == before


def test_show_onto_an_existing_file_writes_nothing(workspace: Path, capsys) -> None:
    (workspace / "imgs").mkdir()
    seven().save("imgs/a.png")
    seven(at=(100, 40)).save("imgs/b.png")
    (workspace / "seen").mkdir()
    Path("seen/imgs_b.png").write_bytes(b"mine")
    code, out, err = cli(capsys, "--show", "seen", "imgs")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "seen/imgs_b.png exists" in err
    assert sorted(os.listdir("seen")) == ["imgs_b.png"]
    assert Path("seen/imgs_b.png").read_bytes() == b"mine"


def test_show_names_stay_inside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "seen"
    files = [Path("/x.png"), Path("../../y.png"), Path("/.hidden.png"), Path("a/../b/z.png")]
    targets = shown_paths(files, folder)
    assert [t.parent for t in targets] == [folder] * 4
    assert [t.name for t in targets] == ["x.png", "y.png", "hidden.png", "b_z.png"]
    long = Path("é" * 120, "ü" * 120 + ".png")  # 240 bytes each: joined, more than 255
    [target] = shown_paths([long], folder)
    assert len(os.fsencode(target.name)) <= 210 and target.name.startswith("é" * 100)


def test_show_of_one_input_twice(workspace: Path, capsys) -> None:
    seven().save("a.png")
    code, _, err = cli(capsys, "--show", "seen", "a.png", "a.png")
    assert code == 0, err
    assert sorted(os.listdir("seen")) == ["a-2.png", "a.png"]


def test_write_new_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "t.png"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        atomic.write_new(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["t.png"]  # no temporary left behind
    atomic.write_new(tmp_path / "n.png", b"new")
    assert (tmp_path / "n.png").read_bytes() == b"new"


# --- EXIF orientation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "stored_as"),
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation, stored_as) -> None:
    """A phone stores the sensor's pixels and says in EXIF how to turn them upright."""
    upright = seven()
    upright.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    photo = tmp_path / "photo.jpg"
    upright.transpose(stored_as).save(photo, quality=95, exif=exif)
    want = prepare(tmp_path / "upright.jpg").pixels.astype(int)
    for got in (prepare(photo), prepare(photo.read_bytes())):  # predict's file, serve's bytes
        assert np.abs(got.pixels.astype(int) - want).mean() < 2
    sideways = to_mnist(Image.open(photo)).pixels.astype(int)  # without EXIF: another image
    assert np.abs(sideways - want).mean() > 20


def test_corrupt_exif_is_no_warning(workspace: Path) -> None:
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + bytes(range(7, 47))  # entries cut short
    seven().save("photo.jpg", exif=exif)
    r = process(workspace, "photo.jpg")
    assert (r.returncode, r.stderr) == (0, b"") and r.stdout.splitlines()[1].startswith(b"photo")


def test_exif_that_pillow_cannot_write_again_still_turns_the_picture_upright(
    workspace: Path,
) -> None:
    """Text under an integer tag (Make retagged as TileWidth): Pillow's exif_transpose writes
    the whole EXIF again and raises struct.error; the Orientation alone is read, and applied."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "cam"  # Orientation 6, Make
    buf = io.BytesIO()
    seven().convert("RGB").save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    data = buf.getvalue()
    old = next(b for b in (b"\x0f\x01\x02\x00", b"\x01\x0f\x00\x02") if b in data)
    Path("odd.jpg").write_bytes(data.replace(old, old.replace(b"\x0f", b"\x45"), 1))
    seven().save("seven.png")
    r = process(workspace, "odd.jpg", "seven.png")
    assert (r.returncode, r.stderr) == (0, b""), r.stderr
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [b"odd.jpg", b"seven.png"]
    turned = to_mnist(seven().transpose(Image.Transpose.ROTATE_270)).pixels.astype(int)
    assert np.abs(prepare(Path("odd.jpg")).pixels.astype(int) - turned).mean() < 2


def test_a_motion_photo_is_read_to_its_image_end(workspace: Path) -> None:
    """A phone's motion photo is a JPEG with a video after its end: the video's bytes hold
    marker-like pairs by the thousand, which are no segments of the picture."""
    buf = io.BytesIO()
    seven().convert("RGB").save(buf, "JPEG")
    Path("motion.jpg").write_bytes(buf.getvalue() + np.random.default_rng(0).bytes(4 << 20))
    r = process(workspace, "motion.jpg")
    assert (r.returncode, r.stderr) == (0, b""), r.stderr


# --- MNIST's own form, or preprocessed ------------------------------------------------------


def filling_the_frame(im: Image.Image) -> Image.Image:
    """A bright-on-dark digit cropped to its ink and scaled to fill a 28x28 frame."""
    a = np.asarray(im)
    ys, xs = np.nonzero(a > 128)
    crop = Image.fromarray(a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    w = round(28 * crop.width / crop.height)
    frame = Image.new("L", (28, 28), 0)
    frame.paste(crop.resize((w, 28), Image.Resampling.LANCZOS), ((28 - w) // 2, 0))
    return frame


def test_a_digit_filling_its_28x28_frame_is_preprocessed() -> None:
    page = seven(fg="white", bg="black")
    frame = filling_the_frame(page)
    assert not in_mnist_form(np.asarray(frame, np.float32))
    p = to_mnist(frame)
    assert not p.as_is
    ys, xs = np.nonzero(p.pixels > 64)
    assert ys.max() - ys.min() < 20 and xs.max() - xs.min() < 20  # in the 20x20 box
    # as the same 7 on a big page is: what the model sees no longer depends on the framing
    assert np.abs(p.pixels.astype(int) - to_mnist(page).pixels.astype(int)).mean() < 8


def test_mnist_form_is_used_as_is() -> None:
    x, _ = glyph_data([3, 7], n=5)  # the synthetic glyphs brought to MNIST's form
    for row in x.numpy():
        a = np.rint(row.reshape(28, 28) * 255).astype(np.uint8)
        p = to_mnist(Image.fromarray(a))
        assert p.as_is and np.array_equal(p.pixels, a)


def test_real_mnist_digits_are_in_mnist_form(real_mnist: Path) -> None:
    raw = gzip.decompress((real_mnist / "t10k-images-idx3-ubyte.gz").read_bytes())
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    assert all(in_mnist_form(a.astype(np.float32)) for a in images)


def test_as_is_and_preprocess_force_either_way(workspace: Path, capsys) -> None:
    filling_the_frame(seven(fg="white", bg="black")).save("frame.png")
    Image.fromarray(to_mnist(seven()).pixels).save("mnist.png")
    seven().save("page.png")
    runs = {}
    for flag in ("--as-is", "--preprocess", None):
        code, out, err = cli(capsys, "--json", *([flag] if flag else []), "frame.png", "mnist.png")
        assert code == 0, err
        runs[flag] = [img["preprocessed"] for img in json.loads(out)["images"]]
    assert runs == {"--as-is": [False, False], "--preprocess": [True, True], None: [True, False]}
    code, out, err = cli(capsys, "--as-is", "page.png", "mnist.png")
    assert code == 2 and "mnist.png" in out
    assert err == (
        "predict: error: page.png: 300x200 pixels: only a 28x28 image is used as it is\n"
    )
    with pytest.raises(SystemExit) as e:
        console.main(["predict", "--as-is", "--preprocess", "mnist.png"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --- names that cannot forge a line ----------------------------------------------------------


def test_a_newline_in_a_name_forges_no_row_and_no_error_line(workspace: Path, capsys) -> None:
    seven().save("a\nb.png 7 1.000", format="PNG")
    Path("x\npredict: error: forged.png").write_text("not an image")
    code, out, err = cli(capsys, "a\nb.png 7 1.000", "x\npredict: error: forged.png")
    assert code == 2
    assert len(out.splitlines()) == 2 and out.splitlines()[1].startswith("a\\nb.png 7 1.000 ")
    assert err == "predict: error: x\\npredict: error: forged.png: " + FORMATS.decode() + "\n"


def test_a_name_that_is_not_utf8(workspace: Path) -> None:
    name = os.fsdecode(b"\xff\x1b[2J.png")
    seven().save(name, format="PNG")
    r = process(workspace, name, env={"PYTHONIOENCODING": "utf-8"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith(b"\\xff\\x1b[2J.png ")
    Path(name).write_text("x")
    r = process(workspace, name, env={"PYTHONIOENCODING": "utf-8"})
    assert r.returncode == 2
    assert r.stderr == b"predict: error: \\xff\\x1b[2J.png: " + FORMATS + b"\n"


def test_a_name_a_legacy_locale_cannot_encode_is_no_traceback(workspace: Path) -> None:
    """stdout refused what stderr escaped: a UnicodeEncodeError, and no result for any input."""
    seven().save("\u65e5.png", format="PNG")
    r = process(workspace, "\u65e5.png", env={"PYTHONIOENCODING": "latin-1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith(b"\\u65e5.png "), r.stdout


# --- models that cannot be trusted ----------------------------------------------------------


def test_nan_weights_are_refused_and_json_has_no_nan(workspace: Path, capsys) -> None:
    spec = ModelSpec("linear", tuple(range(10)), "cross_entropy")
    model = build_model(spec)
    with torch.no_grad():
        model.weights.fill_(float("nan"))
    save_tensors(model.state_dict(), spec, workspace / "models" / "model.safetensors")
    seven().save("s.png")
    code, out, err = cli(capsys, "--json", "s.png")
    assert code == 2 and out == ""
    assert err == (
        "predict: error: models/model.safetensors: weights that are not finite numbers "
        "(nan or inf)\n"
    )


@pytest.mark.parametrize(
    ("digits", "loss"),
    [((3, 3), "cross_entropy"), ((3, 12), "cross_entropy"), ((1, 2, 3), "mnist_loss")],
)
def test_a_spec_with_bad_digits_is_refused(workspace: Path, capsys, digits, loss) -> None:
    spec = ModelSpec("linear", digits, loss)
    save_tensors(build_model(spec).state_dict(), spec, workspace / "models" / "model.safetensors")
    seven().save("s.png")
    code, out, err = cli(capsys, "s.png")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("predict: error: models/model.safetensors: its spec metadata")
    assert "digits" in err


@pytest.mark.parametrize(("key", "value"), [("hidden", 500_000), ("width", 100_000)])
def test_a_spec_beyond_the_params_bounds_is_refused_before_it_is_built(
    workspace: Path, capsys, key: str, value: int
) -> None:
    """A 228-byte model file of a million hidden units cost 1.8 GB before its weights were
    found not to fit."""
    spec = {"model": "simple_net" if key == "hidden" else "cnn", "digits": [3, 7]}
    spec |= {"loss_func": "mnist_loss", "hidden": 30, "init_std": 1.0, "width": 16, key: value}
    data = safetensors.torch.save({"x": torch.zeros(1)}, {"spec": json.dumps(spec)})
    (workspace / "models" / "model.safetensors").write_bytes(data)
    seven().save("s.png")
    code, out, err = cli(capsys, "s.png")
    assert code == 2 and out == ""
    assert err.startswith("predict: error: models/model.safetensors: its spec metadata")
    assert f"train.{key} = {value} is invalid" in err and len(err.splitlines()) == 1


# --- what is not a regular file, or cannot be read ------------------------------------------


def test_a_fifo_is_refused_and_the_rest_predicted(workspace: Path) -> None:
    os.mkfifo("f.png")
    (workspace / "dir").mkdir()
    os.mkfifo("dir/g.png")
    seven().save("ok.png")
    seven().save("dir/ok2.png")
    r = process(workspace, "f.png", "ok.png", "dir")
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        f"predict: error: {p}: not a regular file (a folder, fifo, socket or device)"
        for p in ("f.png", "dir/g.png")
    ]
    rows = [line.split()[0] for line in r.stdout.decode().splitlines()[1:]]
    assert rows == ["ok.png", "dir/ok2.png"]


def test_a_fifo_as_the_model_is_refused(workspace: Path) -> None:
    (workspace / "models" / "model.safetensors").unlink()
    os.mkfifo(workspace / "models" / "model.safetensors")
    seven().save("ok.png")
    r = process(workspace, "ok.png")
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr == (
        b"predict: error: models/model.safetensors: not a regular file (a folder, fifo, socket "
        b"or device)\n"
    )


def test_unreadable_files_and_folders_are_reported_and_the_rest_predicted(
    workspace: Path,
) -> None:
    for d in ("imgs/locked", "imgs/open", "shut"):
        (workspace / d).mkdir(parents=True)
    for f in ("imgs/locked/a.png", "imgs/open/b.png", "imgs/open/c.png", "d.png", "shut/e.png"):
        seven().save(f)
    for p in ("imgs/locked", "imgs/open/c.png", "d.png", "shut"):
        os.chmod(p, 0)
    try:
        r = process(workspace, "imgs", "d.png", "shut/e.png", "shut", unprivileged=True)
    finally:
        for p in ("imgs/locked", "shut"):
            os.chmod(p, 0o700)
    assert r.returncode == 2
    assert sorted(r.stderr.decode().splitlines()) == sorted(
        f"predict: error: {p}: permission denied"
        for p in ("d.png", "imgs/locked", "imgs/open/c.png", "shut", "shut/e.png")
    )
    assert [line.split()[0] for line in r.stdout.decode().splitlines()[1:]] == ["imgs/open/b.png"]


def test_a_link_to_a_folder_is_said_not_skipped_unseen(workspace: Path, capsys) -> None:
    """A folder's link to another (`more -> ../elsewhere`) was skipped without a word and the
    table looked complete, exit 0; a folder holding only one was "a folder with no image files"."""
    (workspace / "elsewhere").mkdir()
    seven().save(workspace / "elsewhere" / "b.png")
    (workspace / "imgs").mkdir()
    seven().save(workspace / "imgs" / "a.png")
    (workspace / "imgs" / "more").symlink_to(workspace / "elsewhere")
    (workspace / "only").mkdir()
    (workspace / "only" / "more").symlink_to(workspace / "elsewhere")
    code, out, err = cli(capsys, "imgs", "only")
    assert code == 2
    assert sorted(err.splitlines()) == [
        f"predict: error: {d}/more: a link to a folder, which is not followed: allowed: the "
        "folder itself"
        for d in ("imgs", "only")
    ]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["imgs/a.png"]


def test_a_file_that_cannot_be_looked_at_is_one_error_not_the_end(workspace: Path) -> None:
    """A folder that may be listed, not entered (0644): the link-to-a-folder check raised on its
    files' EACCES, and the run stopped (exit 1) with the rest not predicted."""
    (workspace / "half").mkdir()
    seven().save(workspace / "half" / "a.png")
    seven().save(workspace / "ok.png")
    os.chmod(workspace / "half", 0o644)
    try:
        r = process(workspace, "half", "ok.png", unprivileged=True)
    finally:
        os.chmod(workspace / "half", 0o700)
    assert r.returncode == 2, r.stderr
    assert r.stderr.decode() == "predict: error: half/a.png: permission denied\n"
    assert [line.split()[0] for line in r.stdout.decode().splitlines()[1:]] == ["ok.png"]


def test_an_unreadable_model_is_permission_denied(workspace: Path) -> None:
    seven().save("ok.png")
    os.chmod("models/model.safetensors", 0)
    r = process(workspace, "ok.png", unprivileged=True)
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr == b"predict: error: models/model.safetensors: permission denied\n"


def test_a_folder_nested_too_deep_is_one_line_and_the_rest_is_predicted(
    workspace: Path, too_deep: Path, capsys
) -> None:
    """os.walk recurses once per level: 1,100 levels were a RecursionError traceback."""
    seven().save(too_deep / "a.png")
    code, out, err = cli(capsys, str(too_deep.relative_to(workspace)))
    assert code == 2 and "deep/a.png" in out
    assert err == "predict: error: deep: folders nested too deep to walk (about 1,000 levels)\n"


# --- only formats Pillow decodes by itself, at a bounded cost ---------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{} loop\n"  # Ghostscript's for ever
FORMATS = b"not a PNG, JPEG, GIF, BMP or WebP image"


def progressive_jpeg(side: int, repeats: int, kind: str = "JPEG") -> bytes:
    """A black progressive JPEG (or MPO: a JPEG, then more images) with its first AC scan
    repeated: 14 bytes a scan, and each is a pass of libjpeg's over every block of the image."""
    buf = io.BytesIO()
    more = {"save_all": True, "append_images": [Image.new("L", (8, 8))]} if kind == "MPO" else {}
    Image.new("L", (side, side)).save(buf, kind, progressive=True, **more)
    data = buf.getvalue()
    i, scan = 2, b""
    while data[i + 1] != 0xD9:  # the segments up to the end of the image
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        end = i + 2 + length
        if data[i + 1] == 0xDA:  # a scan: its header, then entropy-coded data to the next marker
            while not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
                end += 1
            header = data[i + 4 : i + 2 + length]
            if not scan and header[1 + 2 * header[0]] >= 1:  # spectral start > 0: an AC scan
                scan = data[i:end]
        i = end
    return data[:i] + scan * repeats + data[i:]


def test_postscript_is_refused_and_ghostscript_never_runs(workspace: Path, tmp_path: Path):
    """Pillow's EPS plugin hands the file to `gs` with no time limit."""
    bin_dir, ran = tmp_path / "bin", tmp_path / "gs ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch '{ran}'\n")
    (bin_dir / "gs").chmod(0o755)
    Path("loop.png").write_bytes(EPS)
    seven().save("seven.png")
    r = process(workspace, "loop.png", "seven.png", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert r.stderr == b"predict: error: loop.png: " + FORMATS + b"\n"
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [b"seven.png"]
    assert r.returncode == 2 and not ran.exists()


@pytest.mark.parametrize("kind", ["JPEG", "MPO"])
def test_a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded(workspace: Path, kind):
    Path("scans.jpg").write_bytes(progressive_jpeg(200, 5000, kind))
    assert Image.open("scans.jpg").format == kind
    seven().save("photo.jpg", progressive=True)  # a real progressive JPEG: ten or so scans
    r = process(workspace, "scans.jpg", "photo.jpg")
    assert r.stderr == (
        b"predict: error: scans.jpg: a JPEG of more than 100 scans: allowed: up to 100 (a photo "
        b"has ten or so)\n"
    )
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [b"photo.jpg"]


def tiled_tiff(side: int, tile: tuple[int, int], pixels: bytes) -> bytes:
    """A `side`x`side` greyscale TIFF of one deflate tile of `tile` (width, length) pixels."""
    data = zlib.compress(pixels)
    tags = {256: side, 257: side, 258: 8, 259: 8, 262: 1, 277: 1, 284: 1, 322: tile[0],
            323: tile[1], 324: 0, 325: len(data)}  # fmt: skip
    ifd_end = 8 + 2 + 12 * len(tags) + 4
    tags[324] = ifd_end  # the tile's offset: right after the directory
    entries = b"".join(struct.pack("<HHII", t, 4, 1, v) for t, v in sorted(tags.items()))
    return b"II*\0" + struct.pack("<IH", 8, len(tags)) + entries + b"\0\0\0\0" + data


def test_a_tiff_is_refused_and_never_reaches_libtiff(workspace: Path):
    """libtiff allocates a tile whole (a 164-byte 16x16 TIFF of one 32768x65504 tile cost 2 GB),
    and decodes tiles that share their bytes once each (a 1.3 MB file cost 118 s)."""
    ink = seven().convert("L").resize((16, 16)).tobytes()
    Path("bomb.tif").write_bytes(tiled_tiff(16, (32768, 65504), ink))
    Path("tiled.png").write_bytes(tiled_tiff(16, (16, 16), ink))  # a TIFF by any name
    seven().save("seven.png")
    r = process(workspace, "bomb.tif", "tiled.png", "seven.png")
    assert r.stderr == b"".join(
        b"predict: error: " + name + b": " + FORMATS + b"\n" for name in (b"bomb.tif", b"tiled.png")
    )
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [b"seven.png"]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_png_of_many_colour_profiles_is_refused_before_it_is_opened(workspace: Path):
    """Pillow inflates every iCCP chunk (up to 1 MB each) as it opens a PNG: 5 MB of them cost
    serve 11 s of CPU for one drawing. The spec allows one, which is read as usual."""
    seven().save("one.png", icc_profile=b"\0" * 1000)
    data = Path("one.png").read_bytes()
    profile = png_chunk(b"iCCP", b"p\0\0" + zlib.compress(b"\0" * (1 << 20), 9))
    Path("many.png").write_bytes(data[:33] + profile * 500 + data[33:])  # after IHDR
    Path("after.png").write_bytes(data[:-12] + profile * 500 + data[-12:])  # after IDAT: load()
    r = process(workspace, "many.png", "after.png", "one.png")
    assert r.stderr == b"".join(
        b"predict: error: " + name + b": a PNG of 501 colour profiles (iCCP chunks): allowed: one\n"
        for name in (b"many.png", b"after.png")
    )
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [b"one.png"]


def test_a_file_past_the_size_cap_is_refused_unread(workspace: Path) -> None:
    """The pixel cap does not bound what Pillow keeps of a file: a PNG's private chunks, a GIF's
    comment (44 bytes of memory a byte), the whole of a WebP. A sparse 1 GB chunk, next to
    nothing on disk, cost 2.2 GB."""
    seven().save("ok.png")
    data = Path("ok.png").read_bytes()
    with open("sparse.png", "wb") as f:
        f.write(data[:33] + struct.pack(">I", 1 << 30) + b"prVt")
        f.truncate(33 + 8 + (1 << 30))  # the chunk's bytes: a hole
        f.seek(0, io.SEEK_END)
        f.write(b"\0\0\0\0" + data[33:])
    Path("empty.png").touch()
    r = process(workspace, "sparse.png", "empty.png", "ok.png")
    assert r.stderr.decode().splitlines() == [
        "predict: error: sparse.png: too large (more than 16 MB; a photo is a few)",
        "predict: error: empty.png: an empty file",
    ]
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [b"ok.png"]


def test_a_proc_file_is_not_read(tmp_path: Path) -> None:
    """A file of /proc says it is empty, and reading some has effects (kmsg loses its records)."""
    from mnist_basics.preprocess import file_bytes

    with pytest.raises(ImageError, match=r"^an empty file$"):
        file_bytes(Path("/proc/self/status"))


def test_a_fifo_is_looked_at_before_it_is_opened(tmp_path: Path) -> None:
    """Opening is itself an act for some files: a writer waiting on a fifo goes on, a tape
    rewinds. The writer here must still be waiting once predict has refused the fifo."""
    import threading

    from mnist_basics.preprocess import ImageError

    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "wb").close())
    writer.start()
    wchan = Path(f"/proc/self/task/{writer.native_id}/wchan")
    while writer.is_alive() and wchan.read_text() != "wait_for_partner":  # in open(), blocked
        time.sleep(0.01)
    with pytest.raises(ImageError, match="not a regular file"):
        prepare(fifo)
    writer.join(0.5)
    waiting = writer.is_alive()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let it go
    writer.join()
    assert waiting


def test_a_decode_out_of_memory_is_one_line(tmp_path: Path) -> None:
    """Under a memory limit, a large image's pixels cannot be allocated: a line, not MemoryError."""
    Image.new("RGBA", (6000, 6000), "white").save(tmp_path / "big.png")
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from mnist_basics.preprocess import ImageError, prepare\n"
        "status = open('/proc/self/status').read().splitlines()\n"
        "vm = int(next(ln for ln in status if ln.startswith('VmSize')).split()[1])\n"
        "resource.setrlimit(resource.RLIMIT_AS, ((vm << 10) + (100 << 20),) * 2)\n"
        "try:\n"
        "    prepare(Path(sys.argv[1]))\n"
        "except ImageError as e:\n"
        "    print(e)\n"
        "print(prepare(Path(sys.argv[2])).pixels.shape)\n"  # the memory is given back
    )
    seven().save(tmp_path / "ok.png")
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big.png"), str(tmp_path / "ok.png")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "not enough memory to decode it\n(28, 28)\n"


def test_a_png_of_many_chunks_and_a_jpeg_of_many_segments_are_refused_unopened(
    workspace: Path,
) -> None:
    """Pillow reads each PNG chunk and JPEG metadata segment in Python: empty ones cost a
    second a few MB (a 5 MB drawing of them 1.7 s of serve's CPU, 64 MB of JPEG APP1s 33 s)."""
    seven().save("ok.png")
    seven().convert("RGB").save("ok.jpg")
    png, jpg = Path("ok.png").read_bytes(), Path("ok.jpg").read_bytes()
    Path("chunks.png").write_bytes(png[:33] + png_chunk(b"prVt", b"") * 10_001 + png[33:])
    Path("segments.jpg").write_bytes(jpg[:2] + b"\xff\xe1\x00\x02" * 1_001 + jpg[2:])
    r = process(workspace, "chunks.png", "segments.jpg", "ok.png", "ok.jpg")
    assert r.stderr.decode().splitlines() == [
        "predict: error: chunks.png: a PNG of 10,004 chunks: allowed: up to 10,000",
        "predict: error: segments.jpg: a JPEG of more than 1,000 segments: allowed: up to 1,000 "
        "(a photo has about 50)",
    ]
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == [b"ok.png", b"ok.jpg"]


def test_jpeg_markers_are_found_in_one_pass(workspace: Path) -> None:
    """A run of 0xFF made the marker search backtrack, its cost the square of the run's length:
    100 KB held serve 48 s. And segments after an end-of-image before any scan, which Pillow
    reads on, are counted."""
    buf = io.BytesIO()
    seven().convert("RGB").save(buf, "JPEG")
    jpg = buf.getvalue()
    Path("run.jpg").write_bytes(b"\xff\xd8" + b"\xff" * 400_000 + b"\x00")
    Path("early.jpg").write_bytes(jpg[:2] + b"\xff\xd9" + b"\xff\xfe\x00\x02" * 1_001 + jpg[2:])
    r = process(workspace, "run.jpg", "early.jpg")  # within the timeout, not hours
    assert r.stderr.decode().splitlines() == [
        "predict: error: run.jpg: not a PNG, JPEG, GIF, BMP or WebP image",
        "predict: error: early.jpg: a JPEG of more than 1,000 segments: allowed: up to 1,000 "
        "(a photo has about 50)",
    ]


def test_an_exif_larger_than_a_jpeg_can_hold_is_read_by_its_entries_alone(tmp_path: Path) -> None:
    """Pillow decodes a tag's values in Python: an Orientation of 612,000 rationals in a 5 MB
    drawing cost serve 1.8 s. The Orientation is read from IFD0's entries, never their values,
    so a PNG's eXIf of any size turns it, as in a browser."""
    for size in (100, 70_000, 5_000_000):
        exif = Image.Exif()
        exif[0x0112], exif[0x010E] = 6, "x" * size  # Orientation, ImageDescription
        seven().save(tmp_path / "p.png", exif=exif)
        want = seven().transpose(Image.Transpose.ROTATE_270)
        got = prepare(tmp_path / "p.png").pixels.astype(int)
        assert np.abs(got - to_mnist(want).pixels.astype(int)).mean() < 2, size


def test_bytes_after_a_pngs_end_are_no_chunks(workspace: Path) -> None:
    """Padding after IEND, which Pillow and libpng ignore, was counted as chunks."""
    from mnist_basics.layout import decode_png

    small = io.BytesIO()
    Image.new("L", (28, 28), 9).save(small, "PNG")
    assert isinstance(decode_png(small.getvalue() + bytes(1_200)), np.ndarray)
    seven().save("padded.png")
    Path("padded.png").write_bytes(Path("padded.png").read_bytes() + bytes(200_000))
    r = process(workspace, "padded.png")
    assert (r.returncode, r.stderr) == (0, b""), r.stderr


def _with_chunk(png: bytes, chunk_type: bytes, body: bytes, after_pixels: bool = False) -> bytes:
    """`png` with one more chunk, just before its first IDAT or just before IEND."""
    chunk = struct.pack(">I", len(body)) + chunk_type + body
    chunk += struct.pack(">I", zlib.crc32(chunk_type + body))
    at = png.index(b"IEND" if after_pixels else b"IDAT") - 4
    return png[:at] + chunk + png[at:]


def test_the_orientation_is_read_where_a_browser_reads_it() -> None:
    """A browser turns a JPEG by its APP1 EXIF and a PNG by an eXIf chunk before its pixels; it
    ignores a later eXIf, EXIF in text chunks, XMP and WebP's EXIF, which Pillow's getexif reads:
    a picture predict turned the user never saw turned."""
    upright = seven()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # Orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    tiff = exif.tobytes()[6:]  # without JPEG's "Exif\0\0"
    png, jpeg, webp, xmp_jpeg = io.BytesIO(), io.BytesIO(), io.BytesIO(), io.BytesIO()
    stored.save(png, "PNG")
    stored.convert("RGB").save(jpeg, "JPEG", exif=exif, quality=95)
    stored.save(webp, "WEBP", exif=exif, lossless=True)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    xmp += b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
    xmp += b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    stored.convert("RGB").save(xmp_jpeg, "JPEG", xmp=xmp, quality=95)
    hexed = tiff.hex()
    profile = f"\nexif\n{len(tiff):8d}\n{hexed}\n".encode()
    cases = {
        "JPEG EXIF": (jpeg.getvalue(), True),
        "PNG eXIf before the pixels": (_with_chunk(png.getvalue(), b"eXIf", tiff), True),
        "PNG eXIf after the pixels": (_with_chunk(png.getvalue(), b"eXIf", tiff, True), False),
        "PNG tEXt raw profile": (
            _with_chunk(png.getvalue(), b"tEXt", b"Raw profile type exif\0" + profile),
            False,
        ),
        "JPEG XMP only": (xmp_jpeg.getvalue(), False),
        "WebP EXIF": (webp.getvalue(), False),
    }
    want = {True: to_mnist(upright).pixels.astype(int), False: to_mnist(stored).pixels.astype(int)}
    for name, (data, turned) in cases.items():
        assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == 6, name  # Pillow's reading
        assert np.abs(prepare(data).pixels.astype(int) - want[turned]).mean() < 2, name


def test_a_jpeg_of_markers_without_lengths_is_refused_and_serve_reads_no_jpeg(
    tmp_path: Path,
) -> None:
    """Pillow reads each end-of-image marker before a scan in Python, and the walk counted none of
    them: 5 MB of FF D9 cost serve 0.6 s a request, which takes only PNG and walked it all the
    same."""
    buf = io.BytesIO()
    seven().convert("RGB").save(buf, "JPEG")
    jpg = buf.getvalue()
    eois = jpg[:2] + b"\xff\xd9" * 1_001 + jpg[2:]
    with pytest.raises(ImageError, match="a JPEG of more than 1,000 segments"):
        prepare(eois)
    with pytest.raises(ImageError, match=r"^not a PNG image$"):  # serve's: unwalked, unopened
        prepare(eois, formats=["PNG"])


def test_a_picture_with_a_side_of_millions_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """The pixel cap cannot see a shape: LANCZOS weighs each output pixel by a row as long as 6x
    the input over the output, and Pillow and libpng spend per row. A 7.8 KB PNG of 1x4,000,000
    stripes took 353 MB and 0.86 s of serve's, a 2000x2000 photo 94 MB and 0.13 s."""
    stripes = np.full((4_000_000, 1), 255, np.uint8)
    stripes[1::2] = 0
    Image.fromarray(stripes).save(tmp_path / "thin.png", compress_level=9)
    with pytest.raises(ImageError, match=r"^1x4000000 pixels: a side of more than 20,000 pixels"):
        prepare(tmp_path / "thin.png", max_pixels=4_000_000, formats=["PNG"])
    Image.new("L", (20_000, 100), 255).save(tmp_path / "long.png")  # a long side still read
    with pytest.raises(ImageError, match="no ink found"):
        prepare(tmp_path / "long.png")


def _app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


def _turned_by(data: bytes) -> bool:
    """Whether `prepare` turned the sideways seven() that `data` holds, by its Orientation 6."""
    upright = to_mnist(seven()).pixels.astype(int)
    return np.abs(prepare(data).pixels.astype(int) - upright).mean() < 2


def test_only_the_first_exif_of_a_jpeg_turns_it_and_a_pngs_must_be_tiff() -> None:
    """Pillow joins a JPEG's EXIF segments; a browser reads the first alone: one EXIF split in two
    turned the picture for predict, not on the page. A PNG's eXIf is TIFF data, no JPEG prefix."""
    sideways = seven().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x010E], exif[0x0112] = "a drawing", 6  # ImageDescription, then Orientation
    tiff = exif.tobytes()[6:]
    plain = io.BytesIO()
    sideways.convert("RGB").save(plain, "JPEG", quality=95)
    jpg = plain.getvalue()
    whole = jpg[:2] + _app1(b"Exif\0\0" + tiff) + jpg[2:]
    split = jpg[:2] + _app1(b"Exif\0\0" + tiff[:22]) + _app1(b"Exif\0\0" + tiff[22:]) + jpg[2:]
    assert Image.open(io.BytesIO(split)).getexif().get(0x0112) == 6  # Pillow's reading
    assert _turned_by(whole) and not _turned_by(split)
    png = io.BytesIO()
    sideways.save(png, "PNG")
    assert _turned_by(_with_chunk(png.getvalue(), b"eXIf", tiff))
    assert not _turned_by(_with_chunk(png.getvalue(), b"eXIf", b"Exif\0\0" + tiff))


def test_a_jpeg_of_more_exif_than_one_segment_holds_is_refused_before_it_is_opened() -> None:
    """Pillow joins every EXIF segment and reads the dpi from them as it opens the file: 257 of
    them in 16.7 MB cost 7 s and 495 MB, before any cap on the EXIF was checked."""
    plain = io.BytesIO()
    seven().convert("RGB").save(plain, "JPEG")
    jpg = plain.getvalue()
    two = jpg[:2] + _app1(b"Exif\0\0" + bytes(40_000)) * 2 + jpg[2:]
    with pytest.raises(ImageError, match=r"^a JPEG of 80,012 bytes of EXIF: allowed: up to 65,536"):
        prepare(two)


def test_markers_that_pillow_reads_without_a_length_hide_no_segments() -> None:
    """After FF F0 (JPG0) Pillow reads no length; the walk read one and skipped the next 64 KB,
    16,383 empty segments that Pillow read one by one (4.2 million in 16 MB: 7 s)."""
    plain = io.BytesIO()
    seven().convert("RGB").save(plain, "JPEG")
    jpg = plain.getvalue()
    hidden = b"\xff\xf0\xff\xff" + b"\xff\xe1\x00\x02" * 16_383 + b"\x00"
    with pytest.raises(ImageError, match="a JPEG of more than 1,000 segments"):
        prepare(jpg[:2] + hidden + jpg[2:])


def test_an_animation_and_a_gif_frame_short_of_its_screen_are_refused(tmp_path: Path) -> None:
    """Pillow and a browser compose frames differently: an APNG's still under its first frame, a
    GIF's bare screen in palette colour 0 where Chromium leaves it clear. predict read a 3 where
    the page showed a 7 (or nothing)."""
    three = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(three).text((100, 20), "3", fill=0, font_size=160)
    animated = io.BytesIO()
    three.save(animated, "PNG", save_all=True, append_images=[seven(), seven()], default_image=True)
    with pytest.raises(ImageError, match=r"^an APNG \(a PNG with an acTL chunk\): allowed: a PNG"):
        prepare(animated.getvalue())
    gif = io.BytesIO()
    three.save(gif, "GIF", save_all=True, append_images=[seven()])
    with pytest.raises(ImageError, match=r"^an animated GIF image"):
        prepare(gif.getvalue())
    still = io.BytesIO()
    seven().crop((40, 20, 150, 200)).save(still, "GIF")
    data = bytearray(still.getvalue())
    data[6:10] = struct.pack("<HH", 200, 280)  # the screen larger than its one frame
    with pytest.raises(ImageError, match=r"^a GIF whose first frame \(\(0, 0, 110, 180\)\)"):
        prepare(bytes(data))
    camera = io.BytesIO()  # a camera's MPO: several pictures, not an animation
    seven().convert("RGB").save(
        camera, "MPO", save_all=True, append_images=[seven().convert("RGB")]
    )
    assert prepare(camera.getvalue()).pixels.any()


def test_the_orientation_is_a_short_of_one_value_as_a_browser_reads_it() -> None:
    """Pillow reads an Orientation stored as a LONG, which a browser ignores, and passed over an
    EXIF segment that begins `Exif\\0\\xff`, which a browser reads."""
    sideways = seven().transpose(Image.Transpose.ROTATE_90)
    plain = io.BytesIO()
    sideways.convert("RGB").save(plain, "JPEG", quality=95)
    jpg = plain.getvalue()
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)  # Orientation, SHORT, 1 value: 6
    tiff = b"MM\x00*" + struct.pack(">IH", 8, 1) + entry + bytes(4)
    as_long = tiff.replace(entry, struct.pack(">HHII", 0x0112, 4, 1, 6))
    assert _turned_by(jpg[:2] + _app1(b"Exif\0\0" + tiff) + jpg[2:])
    assert _turned_by(jpg[:2] + _app1(b"Exif\0\xff" + tiff) + jpg[2:])
    long_jpg = jpg[:2] + _app1(b"Exif\0\0" + as_long) + jpg[2:]
    assert Image.open(io.BytesIO(long_jpg)).getexif().get(0x0112) == 6  # Pillow's reading
    assert not _turned_by(long_jpg)


def test_an_invalid_orientation_entry_hides_no_valid_one_and_a_large_png_exif_is_read() -> None:
    """A browser passes over an Orientation that is no SHORT of one value from 1 to 8 and takes
    the next; predict stopped at the first. A PNG's eXIf of more than 64 KB went unread: a 3
    stored on its side was read as a 7, where the page showed it upright."""
    sideways = seven().transpose(Image.Transpose.ROTATE_90)
    plain = io.BytesIO()
    sideways.save(plain, "PNG")
    valid = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    for bad in (
        struct.pack(">HHIHH", 0x0112, 3, 1, 0, 0),  # value 0
        struct.pack(">HHIHH", 0x0112, 3, 1, 9, 0),  # value 9
        struct.pack(">HHII", 0x0112, 4, 1, 6),  # a LONG
        struct.pack(">HHIHH", 0x0112, 3, 2, 6, 6),  # two values
    ):
        tiff = b"MM\x00*" + struct.pack(">IH", 8, 2) + bad + valid + bytes(4)
        assert _turned_by(_with_chunk(plain.getvalue(), b"eXIf", tiff)), bad.hex()
    entries = 6_000  # 72 KB of IFD0, the Orientation last
    filler = struct.pack(">HHIHH", 0x0100, 3, 1, 1, 0) * (entries - 1)
    tiff = b"MM\x00*" + struct.pack(">IH", 8, entries) + filler + valid + bytes(4)
    assert len(tiff) > 1 << 16
    assert _turned_by(_with_chunk(plain.getvalue(), b"eXIf", tiff))
