"""Sources over real HTTP on loopback, on small synthetic trees: who serves, faults fall through,
the error when none serves, and that a failure leaves nothing behind."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from http_fixtures import (
    FAULTS,
    Server,
    digest,
    digest_zip,
    leftovers,
    member,
    tar_tree,
    tar_with,
)
from PIL import Image

from mnist_basics import rawzip
from mnist_basics.atomic import atomic_path, clear_stale
from mnist_basics.download import Archive, Urls, download, fetch
from mnist_basics.errors import UserError
from mnist_basics.layout import Split, dataset_name
from mnist_basics.rawzip import DATE_TIME, encode_png

FAULT_WHY = {
    "404": "HTTP 404",
    "500": "HTTP 500",
    "trunc": "truncated, got",
    "bad": "checksum mismatch",
    "stall": "timed out",
    "ftp": "only http and https URLs are followed",
}


@pytest.fixture(scope="module")
def sample_tgz(http_server: Server, synthetic_37: Path) -> Archive:
    """A mnist_sample.tgz-like archive of the synthetic 3s and 7s, served on loopback."""
    body = tar_tree(synthetic_37, "mnist_sample")
    http_server.files["mnist_sample.tgz"] = body
    return Archive(http_server.url("files", "mnist_sample.tgz"), len(body), _md5(body))


def _md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()  # noqa: S324


def _urls(http_server: Server, route: str, archive: Archive) -> Urls:
    url = http_server.url(route, "mnist_sample.tgz")
    return Urls(sample=Archive(url, archive.size, archive.md5), mirrors=())


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mnist_basics"]


def test_dataset_names() -> None:
    assert dataset_name([7, 3]) == "mnist_sample"
    assert dataset_name([9, 0, 1, 2, 3, 4, 5, 6, 7, 8]) == "mnist_0123456789"
    assert dataset_name([8, 1]) == "mnist_18"


def test_png_encoder_round_trips(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    for i, image in enumerate(images):
        (tmp_path / "x.png").write_bytes(encode_png(image))
        with Image.open(tmp_path / "x.png") as im:
            assert (im.format, im.mode, im.size) == ("PNG", "L", (28, 28))
            assert np.array_equal(np.asarray(im), images[i])


def test_no_compressor_chooses_a_byte_of_the_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zlib and zlib-ng (Fedora's, Windows Python's) write other bytes at one level, so a
    compressed PNG would give another MD5 of data/raw.zip there: each PNG's rows are stored."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a compressor was asked")

    monkeypatch.setattr(zlib, "compress", refuse)
    monkeypatch.setattr(zlib, "compressobj", refuse)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    split = Split(images, np.array([3, 3, 7, 7]), np.arange(4))
    rawzip.write(tmp_path / "raw.zip", "mnist_sample", {"train": split, "valid": split})
    rows = np.zeros((28, 29), np.uint8)
    rows[:, 1:] = images[0]
    assert rows.tobytes() in encode_png(images[0])  # the pixels themselves, uncompressed
    _, splits = rawzip.read(tmp_path / "raw.zip")
    assert np.array_equal(splits["train"].images, images)


def test_fastai_source_serves(
    tmp_path: Path, http_server: Server, sample_tgz: Archive, synthetic_37: Path
) -> None:
    out = tmp_path / "data/raw.zip"
    urls = _urls(http_server, "files", sample_tgz)
    assert download([7, 3], ["fastai", "mnist"], 5, out, urls=urls) == "fastai"
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw.zip"]
    got, counts = digest_zip(out, "mnist_sample")
    assert got == digest(synthetic_37)[0]
    assert counts == {"train/3": 40, "train/7": 40, "valid/3": 12, "valid/7": 12}
    assert leftovers(tmp_path) == []


def test_fastai_full_archive_maps_training_testing(
    tmp_path: Path, http_server: Server, synthetic_three: Path
) -> None:
    body = tar_tree(synthetic_three, "mnist_png", {"train": "training", "valid": "testing"})
    http_server.files["mnist_png.tgz"] = body
    full = Archive(http_server.url("files", "mnist_png.tgz"), len(body), _md5(body))
    out = tmp_path / "raw.zip"
    assert download([8, 1], ["fastai"], 5, out, urls=Urls(full=full)) == "fastai"
    kept = tmp_path / "kept"
    for split in ("train", "valid"):
        for d in ("1", "8"):
            shutil.copytree(synthetic_three / split / d, kept / split / d)
    assert digest_zip(out, "mnist_18") == digest(kept)


@pytest.mark.parametrize("route", [*FAULTS, "ftp"])
def test_each_fault_falls_through_to_the_next_source(
    tmp_path: Path,
    route: str,
    http_server: Server,
    sample_tgz: Archive,
    synthetic_37: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "mnist_basics")
    out = tmp_path / "data/raw.zip"
    urls = _urls(http_server, route, sample_tgz)
    assert download([3, 7], ["fastai", str(synthetic_37)], 1, out, urls=urls) == str(synthetic_37)
    fastai_line, served, why = _lines(caplog)
    assert fastai_line.startswith("fastai: skipped after")
    assert served.startswith(f"{synthetic_37}: served")
    assert why.startswith("the sources skipped, and why:\n  fastai: ") and FAULT_WHY[route] in why
    assert digest_zip(out, "mnist_sample")[0] == digest(synthetic_37)[0]
    assert leftovers(tmp_path) == []


def test_stall_is_abandoned_after_the_timeout(
    tmp_path: Path, http_server: Server, sample_tgz: Archive
) -> None:
    import time

    start = time.monotonic()
    with pytest.raises(UserError, match="timed out"):
        download(
            [3, 7],
            ["fastai"],
            1,
            tmp_path / "raw.zip",
            urls=_urls(http_server, "stall", sample_tgz),
        )
    assert time.monotonic() - start < 5


def test_a_trickle_is_abandoned_after_the_timeout(
    tmp_path: Path, http_server: Server, sample_tgz: Archive, synthetic_37: Path
) -> None:
    """A byte every 0.2 s: each read is within the timeout, yet 1 s brings far less than a KiB."""
    out = tmp_path / "raw.zip"
    urls = _urls(http_server, "trickle", sample_tgz)
    assert download([3, 7], ["fastai", str(synthetic_37)], 1, out, urls=urls) == str(synthetic_37)
    with pytest.raises(UserError, match=r"fastai: .*too slow: \d+ bytes in 2 s"):
        download([3, 7], ["fastai"], 1, out, urls=urls)


def test_a_drip_that_makes_progress_still_ends_within_its_deadline(
    tmp_path: Path, http_server: Server, sample_tgz: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 KiB every 0.05 s passes the progress rule in every window, however long the body: a
    1 GiB archive so sent would hold the stage for days."""
    monkeypatch.setattr(fetch, "WHOLE", 4, raising=False)  # 0.4 s: less than the drip takes
    urls = _urls(http_server, "drip", sample_tgz)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"fastai: .*too slow: [\d,]+ bytes when the 0.4 s a"):
        download([3, 7], ["fastai"], 0.1, tmp_path / "raw.zip", urls=urls)
    assert time.monotonic() - start < 5


def test_the_deadline_is_the_sources_not_each_files(
    tmp_path: Path, http_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mnist source fetches four files, each from up to three mirrors: a deadline per file
    let three dripping mirrors hold it three times as long (40 min and more with the default)."""
    monkeypatch.setattr(fetch, "WHOLE", 4, raising=False)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        http_server.files[name] = bytes(1 << 20)
    urls = Urls(mirrors=(http_server.mirror("drip"),) * 3)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"too slow: [\d,]+ bytes when the 1 s a source"):
        download([3, 7], ["mnist"], 0.25, tmp_path / "raw.zip", urls=urls)
    assert time.monotonic() - start < 2.5  # not 3 s: 1 s for each mirror


def test_a_killed_downloads_work_folder_is_cleared_by_the_next_run(
    tmp_path: Path, http_server: Server, sample_tgz: Archive
) -> None:
    """kill -9 mid-download leaves the download's work folder (a partial archive of up to 1 GiB)
    beside data/raw.zip: it has the name the stage's next run clears."""
    out = tmp_path / "data" / "raw.zip"
    urls = _urls(http_server, "trickle", sample_tgz)
    code = (
        "from mnist_basics.download import Archive, Urls, download; "
        f"download([3, 7], ['fastai'], 30, {str(out)!r}, urls={urls!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while not list(out.parent.glob(".raw.zip.*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the trickle has begun into it
    finally:
        proc.kill()
        proc.wait()
    assert [p.name for p in out.parent.iterdir()], "no work folder appeared"
    clear_stale(out)
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ("slowhead", r"too slow: 0 bytes in 2 s"),
        ("slowchunk", r"too slow: 0 bytes in 2 s"),
        ("headers", r"HTTPException: got more than 100 headers"),
    ],
)
def test_headers_or_a_chunk_size_that_never_end_are_abandoned(
    tmp_path: Path, http_server: Server, sample_tgz: Archive, route: str, why: str
) -> None:
    """A header trickled a byte at a time resets the socket's timeout with every byte; a flood
    of header lines is http.client's own error: each is one line of the source's failure."""
    with pytest.raises(UserError, match=rf"fastai: .*{why}"):
        download(
            [3, 7], ["fastai"], 1, tmp_path / "raw.zip", urls=_urls(http_server, route, sample_tgz)
        )
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["fifo", "too-big"])
def test_a_local_source_that_is_no_archive_of_sane_size_is_refused(
    tmp_path: Path, synthetic_37: Path, kind: str
) -> None:
    """A fifo would block the read for ever; a 2 GB (sparse) file would be read for minutes."""
    import os

    src = tmp_path / "big.tgz"
    if kind == "fifo":
        os.mkfifo(src)
    else:
        with src.open("wb") as f:
            f.truncate(2 << 30)
    out = tmp_path / "raw.zip"
    with pytest.raises(UserError) as e:
        download([3, 7], [str(src)], 1, out)
    why = {"fifo": "a fifo, socket or device", "too-big": "2,147,483,648 bytes, more than the"}[
        kind
    ]
    assert why in str(e.value)
    assert download([3, 7], [str(src), str(synthetic_37)], 1, out) == str(synthetic_37)


def test_when_none_serves_the_error_names_every_source(
    tmp_path: Path, http_server: Server, sample_tgz: Archive
) -> None:
    http_server.files["evil.tgz"] = tar_with([member("../evil.png")])
    http_server.files.setdefault("train-images-idx3-ubyte.gz", b"x" * 1000)
    urls = Urls(
        sample=Archive(http_server.url("404", "x.tgz"), 1, "0" * 32),
        mirrors=(http_server.mirror("500"), http_server.mirror("trunc")),
    )
    sources = [
        "fastai",
        "mnist",
        "./no/such/folder",
        http_server.url("files", "evil.tgz"),
        "ftp://example.org/mnist.tgz",
    ]
    (tmp_path / "project").mkdir()
    out = tmp_path / "project/data/raw.zip"
    with pytest.raises(UserError) as e:
        download([3, 7], sources, 2, out, urls=urls)
    msg = str(e.value).splitlines()
    assert msg[0].startswith("no source delivered MNIST digits [3, 7]")
    assert [ln.split(":")[0].strip() for ln in msg[1:]] == [
        "fastai",
        "mnist",
        "./no/such/folder",
        "http",
        "ftp",
    ]
    assert "HTTP 404" in msg[1] and "HTTP 500" in msg[2] and "truncated" in msg[2]
    assert "no such file or folder" in msg[3]
    assert "refused member '../evil.png'" in msg[4]
    assert "only http, https and file URLs" in msg[5]
    assert list((tmp_path / "project").iterdir()) == []  # no data/, no data/raw.zip, no *.tmp


def test_a_failed_run_leaves_the_previous_output_alone(tmp_path: Path) -> None:
    out = tmp_path / "data/raw.zip"
    out.parent.mkdir()
    out.write_text("old")
    with pytest.raises(UserError):
        download([3, 7], ["./missing"], 1, out)
    assert out.read_text() == "old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "case",
    ["dotdot", "absolute", "symlink", "hardlink", "device"],
)
def test_unsafe_user_archive_falls_through(
    tmp_path: Path, case: str, http_server: Server, synthetic_37: Path
) -> None:
    members = {
        "dotdot": [member("mnist_sample/../../x.png")],
        "absolute": [member("/x.png")],
        "symlink": [member("mnist_sample/train", tarfile.SYMTYPE, "/")],
        "hardlink": [member("a"), member("mnist_sample/h", tarfile.LNKTYPE, "a")],
        "device": [member("mnist_sample/d", tarfile.BLKTYPE)],
    }[case]
    http_server.files[f"{case}.tgz"] = tar_with(members)
    url = http_server.url("files", f"{case}.tgz")
    out = tmp_path / "data/raw.zip"
    assert download([3, 7], [url, str(synthetic_37)], 2, out) == str(synthetic_37)
    assert not (tmp_path / "x.png").exists() and leftovers(tmp_path) == []


def test_user_tgz_by_path_file_url_and_http(
    tmp_path: Path, http_server: Server, sample_tgz: Archive, synthetic_37: Path
) -> None:
    tgz = tmp_path / "mine.tgz"
    tgz.write_bytes(http_server.files["mnist_sample.tgz"])
    want = digest(synthetic_37)[0]
    for source in (str(tgz), tgz.as_uri(), sample_tgz.url):
        out = tmp_path / "raw.zip"
        assert download([3, 7], [source], 2, out) == source
        assert digest_zip(out, "mnist_sample")[0] == want


def test_a_url_sources_failure_names_its_url_once(
    tmp_path: Path, http_server: Server, sample_tgz: Archive
) -> None:
    url = http_server.url("404", "mnist_sample.tgz")
    with pytest.raises(UserError) as e:
        download([3, 7], [url], 2, tmp_path / "raw.zip")
    assert str(e.value).splitlines()[1] == f"  {url}: HTTP 404 Not Found"


def test_the_zip_is_byte_identical_across_builds_and_sources(
    tmp_path: Path, http_server: Server, sample_tgz: Archive, synthetic_37: Path
) -> None:
    """Same images, same bytes: dvc.lock's MD5 of data/raw.zip holds on every machine."""
    a, b = tmp_path / "a/raw.zip", tmp_path / "b/raw.zip"
    download([3, 7], [str(synthetic_37)], 2, a)
    download([3, 7], ["fastai"], 2, b, urls=_urls(http_server, "files", sample_tgz))
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos[:6]] == [
        f"mnist_sample/train/3/{i}.png" for i in (0, 2, 4, 6, 8, 10)
    ]  # canonical order: split, digit, index as a number
    order = [i.filename.split("/") for i in infos]
    assert order == sorted(order, key=lambda p: (p[1] != "train", int(p[2]), int(p[3][:-4])))
    for i in infos:
        assert (i.compress_type, i.date_time, i.extra) == (zipfile.ZIP_STORED, DATE_TIME, b"")
        assert i.external_attr == 0o100644 << 16 and i.create_system == 3


def test_a_failed_write_leaves_no_zip_and_no_temporary(tmp_path: Path) -> None:
    """What a failed write of the zip leaves behind: nothing (a stage killed mid-way is
    test_robust_runs's)."""
    bad = Split(np.zeros((2, 28, 28), np.uint8), np.array([3, 7]), np.array([0]))  # 1 index
    out = tmp_path / "data/raw.zip"
    with pytest.raises(ValueError), atomic_path(out) as tmp:
        rawzip.write(tmp, "mnist_sample", {"train": bad, "valid": bad})
    assert list(out.parent.iterdir()) == []
