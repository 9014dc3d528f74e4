"""Security: unsafe archives refused on every source, no pickle, no shell, no odd URLs."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from http_fixtures import leftovers, member, tar_with

from mnist_basics import archives
from mnist_basics.download import download
from mnist_basics.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

UNSAFE = {
    "dotdot": ([member("mnist_sample/../../evil.png")], "path leaves the folder"),
    "absolute": ([member("/tmp/robust-evil.png")], "absolute path"),
    "symlink": ([member("mnist_sample/train", tarfile.SYMTYPE, "/")], "symlink"),
    "hardlink": ([member("a"), member("mnist_sample/h", tarfile.LNKTYPE, "a")], "hard link"),
    "chardev": ([member("mnist_sample/d", tarfile.CHRTYPE)], "device or fifo"),
    "blockdev": ([member("mnist_sample/d", tarfile.BLKTYPE)], "device or fifo"),
    "fifo": ([member("mnist_sample/p", tarfile.FIFOTYPE)], "device or fifo"),
}


def _source(kind: str, tgz: Path) -> str:
    return tgz.as_uri() if kind == "file_url" else str(tgz)


@pytest.mark.parametrize("kind", ["path", "file_url"])
@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archive_is_refused_from_a_path_and_a_file_url(
    tmp_path: Path, case: str, kind: str
) -> None:
    """(The http(s) source has the same cases in test_download_sources.py.)"""
    members, why = UNSAFE[case]
    tgz = tmp_path / "evil.tgz"
    tgz.write_bytes(tar_with(members))
    project = tmp_path / "project"
    project.mkdir()
    with pytest.raises(UserError) as e:
        download([3, 7], [_source(kind, tgz)], 2, project / "data/raw.zip")
    assert f"refused member {members[-1].name!r}: {why}" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz", "project"]
    assert list(project.iterdir()) == []  # no data/, nothing extracted, no *.tmp
    assert not Path("/tmp/robust-evil.png").exists()


def _member_bomb(n: int) -> bytes:
    """A .tgz of n copies of one folder member: tiny, but n members."""
    info = tarfile.TarInfo("mnist_sample/train/")
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) * n + b"\0" * 1024, 1, mtime=0)


def test_member_count_bomb_through_a_source(tmp_path: Path, monkeypatch) -> None:
    """The source path honours the member cap (lowered here so the test takes no time)."""
    monkeypatch.setattr(archives, "MAX_MEMBERS", 1000)
    tgz = tmp_path / "bomb.tgz"
    tgz.write_bytes(_member_bomb(1001))
    with pytest.raises(UserError, match=r"bomb\.tgz: more than 1,000 members"):
        download([3, 7], [str(tgz)], 2, tmp_path / "project/data/raw.zip")
    assert leftovers(tmp_path) == [] and not (tmp_path / "project/data").exists()


def test_member_count_bomb_at_the_real_limit(tmp_path: Path) -> None:
    tgz = tmp_path / "bomb.tgz"
    tgz.write_bytes(_member_bomb(archives.MAX_MEMBERS + 1))
    assert tgz.stat().st_size < 2 << 20
    with pytest.raises(UserError, match=rf"more than {archives.MAX_MEMBERS:,} members"):
        download([3, 7], [tgz.as_uri()], 2, tmp_path / "project/data/raw.zip")
    assert leftovers(tmp_path) == [] and not (tmp_path / "project/data").exists()


def test_size_bomb_through_a_source(tmp_path: Path) -> None:
    """A member that says it is larger than any PNG is refused before a byte of it is read."""
    info = tarfile.TarInfo("mnist_sample/train/3/1.png")
    info.size = archives.MAX_MEMBER_BYTES + 1
    tgz = tmp_path / "big.tgz"
    tgz.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096, 1))
    with pytest.raises(UserError, match=r"larger than expected"):
        download([3, 7], [str(tgz)], 2, tmp_path / "project/data/raw.zip")
    assert leftovers(tmp_path) == [] and not (tmp_path / "project/data").exists()


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    """A loopback server whose /to/<url> answers 302 to <url>."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to/"))
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/to/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/mnist.tgz", "gopher://127.0.0.1/mnist.tgz"])
def test_other_schemes_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(UserError, match="only http, https and file URLs are followed"):
        download([3, 7], [url], 2, tmp_path / "data/raw.zip")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "target", ["ftp://127.0.0.1/m.tgz", "gopher://127.0.0.1/m.tgz", "file:///etc/passwd"]
)
def test_a_redirect_to_another_scheme_is_refused(tmp_path: Path, redirector: str, target: str):
    # Ours refuses ftp (urllib would follow it); urllib itself refuses the rest.
    refused = r"only http and https URLs are followed|Redirection to url '[^']+' is not allowed"
    with pytest.raises(UserError, match=refused):
        download([3, 7], [redirector + target], 2, tmp_path / "data/raw.zip")
    assert list(tmp_path.iterdir()) == []


def _python_files(*folders: str) -> Iterator[tuple[str, str]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text()


UNPICKLING = re.compile(
    r"pickle\.loads?\(|torch\.load\(|pickle\.Unpickler|\bUnpickler\(|allow_pickle\s*=\s*True"
    r"|marshal\.loads?\(|shelve\.open|dill\.|joblib\.load"
)


def _grep(pattern: re.Pattern, skip: str = "") -> list[str]:
    """Lines of src/ and stages/ matching pattern, as path:line: text (files named `skip` aside)."""
    return [
        f"{rel}:{n}: {line.strip()}"
        for rel, text in _python_files("src", "stages")
        if rel != skip
        for n, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


def test_no_pickle_is_loaded_outside_the_restricted_unpickler() -> None:
    assert _grep(UNPICKLING, skip="src/mnist_basics/download/pypi.py") == []
    pypi = (ROOT / "src/mnist_basics/download/pypi.py").read_text()
    # The one unpickler there refuses every global but NumPy's array builders.
    assert "class NumpyUnpickler(pickle.Unpickler)" in pypi and "def find_class" in pypi
    assert "pickle.load(" not in pypi and "pickle.loads(" not in pypi


SHELL = re.compile(
    r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput|getstatusoutput"
    r"|os\.exec[lv]p?e?\(|os\.spawn"
)


def test_no_shell_command_is_built() -> None:
    assert _grep(SHELL) == []


OSC52 = "\x1b]52;c;ZWNobyBwd25lZAo=\x07"  # sets the clipboard in terminals that allow it


def test_a_name_in_an_archive_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """A member's folder name was listed raw in the stage's line: an escape sequence from a
    downloaded archive wrote the user's clipboard, or forged a `served` line."""
    tgz = tmp_path / "evil.tgz"
    names = ["mnist_sample/train/3/1.png", f"mnist_sample/train/{OSC52}x\n  y/1.png"]
    tgz.write_bytes(tar_with([member(n) for n in names]))
    with pytest.raises(UserError) as e:
        download([3, 7], [str(tgz)], 2, tmp_path / "project/data/raw.zip")
    assert "\x1b" not in str(e.value) and "\\x1b]52;c;" in str(e.value)
    assert "x\\n  y" in str(e.value)


def test_a_stages_error_and_log_lines_are_printable(tmp_path: Path) -> None:
    """What a stage prints, its log and its one error line, as the command line's are."""
    shutil.copy(ROOT / "params.yaml", tmp_path)
    code = (
        "import logging\n"
        "from mnist_basics.errors import UserError\n"
        "from mnist_basics.stage import run_stage\n"
        "def main(p):\n"
        f"    logging.getLogger('mnist_basics').info('%s: skipped', {OSC52!r})\n"
        f"    raise UserError('head:\\n  ' + {OSC52!r} + '\\u202e')\n"
        "run_stage('download', main)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "download: \\x1b]52;c;ZWNobyBwd25lZAo=\\x07: skipped",
        "download: error: head:",
        "  \\x1b]52;c;ZWNobyBwd25lZAo=\\x07\\u202e",
    ]
