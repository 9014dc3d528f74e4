"""A real HTTP server on 127.0.0.1 for the download tests, with routes for every fault.

Routes (NAME is a file registered with `server.files[NAME] = body`):
  /files/NAME     the body
  /404/NAME       404 Not Found          /500/NAME   500 Internal Server Error
  /trunc/NAME     Content-Length of the whole body, half of it sent, then the connection closed
  /bad/NAME       a body of the same kind with other content (a .gz stays a valid gzip)
  /stall/NAME     headers sent, then nothing until the server stops
  /trickle/NAME   headers sent, then a byte every 0.2 s (at most 100, then the connection closed)
  /drip/NAME      headers sent, then 2 KiB every 0.05 s: progress, yet slow on the whole
  /slowhead/NAME  the status line, then one byte of a header every 0.2 s (at most 100, then closed)
  /headers/NAME   the status line, then 200 header lines at once (more than http.client takes)
  /slowchunk/NAME a chunked body whose first chunk-size line comes a digit every 0.2 s
  /ftp/NAME       a redirect to ftp://, which must not be followed
Also helpers the download tests share: tar builders and a digest of a PNG tree or of data/raw.zip.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FAULTS = ("404", "500", "trunc", "bad", "stall")


def wrong_body(name: str, body: bytes) -> bytes:
    """Same length, other content; a .gz stays valid gzip so the content check is what fails."""
    if name.endswith(".gz"):
        content = bytearray(gzip.decompress(body))
        content[-1] ^= 0xFF
        return gzip.compress(bytes(content), compresslevel=1, mtime=0)
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0xFF
    return bytes(flipped)


@dataclass
class Server:
    """The running server: its base URL and the files it serves."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    wrong: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)

    def wrong_body(self, name: str) -> bytes:
        """The /bad/ body of a file, made once per body (recompressing 47 MB takes a while)."""
        body = self.files[name]
        if name not in self.wrong or self.wrong[name][0] is not body:
            self.wrong[name] = (body, wrong_body(name, body))
        return self.wrong[name][1]

    def url(self, route: str, name: str) -> str:
        return f"{self.base}{route}/{name}"

    def mirror(self, route: str) -> str:
        return f"{self.base}{route}/"


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes, length: int | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/", 1)
            route, name = [*parts, ""][:2]
            body = server.files.get(name)
            if route in ("404", "500") or body is None:
                code = 500 if route == "500" else 404
                self._send(code, b"no")
            elif route == "files":
                self._send(200, body)
            elif route == "trunc":
                self._send(200, body[: len(body) // 2], length=len(body))
                self.close_connection = True
            elif route == "bad":
                self._send(200, server.wrong_body(name))
            elif route == "stall":
                self._send(200, b"", length=len(body))
                server.stop.wait(30)
            elif route == "drip":
                self._send(200, b"", length=len(body))
                for start in range(0, len(body), 2048):
                    if server.stop.wait(0.05):
                        break
                    self.wfile.write(body[start : start + 2048])
                    self.wfile.flush()
                self.close_connection = True
            elif route == "trickle":
                self._send(200, b"", length=len(body))
                for byte in body[:100]:
                    if server.stop.wait(0.2):
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                self.close_connection = True
            elif route in ("slowhead", "headers", "slowchunk"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                if route == "slowchunk":
                    self.wfile.write(b"Transfer-Encoding: chunked\r\n\r\n")
                if route == "headers":
                    self.wfile.write(b"X-A: b\r\n" * 200)
                for _ in range(0 if route == "headers" else 100):
                    if server.stop.wait(0.2):
                        break
                    self.wfile.write(b"b" if route == "slowhead" else b"0")
                    self.wfile.flush()
                self.close_connection = True
            elif route == "ftp":
                self.send_response(302)
                self.send_header("Location", f"ftp://127.0.0.1/{name}")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(404, b"no")

    return Handler


@pytest.fixture(scope="session")
def http_server() -> Iterator[Server]:
    """A ThreadingHTTPServer on a free loopback port, in a thread, for the whole session."""
    server = Server("")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    httpd.shutdown()
    httpd.server_close()


def tar_tree(root: Path, top: str, rename: dict[str, str] | None = None) -> bytes:
    """A .tgz of `root` under folder `top`, deterministic (sorted, mtime 0, no owners)."""
    rename = rename or {}
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf,
    ):
        for path in sorted(root.rglob("*")):
            parts = path.relative_to(root).parts
            name = "/".join((top, rename.get(parts[0], parts[0]), *parts[1:]))
            info = tarfile.TarInfo(name)
            if path.is_file():
                data = path.read_bytes()
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
    return buf.getvalue()


def tar_with(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    """A .tgz of hand-made members (each regular file gets `data`), for the unsafe cases."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            if m.isfile():
                m.size = len(data)
                tf.addfile(m, io.BytesIO(data))
            else:
                tf.addfile(m)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _digest(items: list[tuple[str, int, int, bytes]]) -> tuple[str, dict[str, int]]:
    h = hashlib.sha256()
    counts: dict[str, int] = {}
    for split, d, i, data in sorted(items):
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == "L" and im.size == (28, 28)
            h.update(f"{split}/{d}/{i}:".encode() + np.asarray(im).tobytes())
        counts[f"{split}/{d}"] = counts.get(f"{split}/{d}", 0) + 1
    return h.hexdigest(), counts


def digest(tree: Path) -> tuple[str, dict[str, int]]:
    """sha256 over sorted (split, digit, index, pixels) of a PNG tree, and counts per split/digit.

    Equal digests mean equal images under equal labels and names, whatever the PNG bytes.
    """
    items = []
    for path in tree.glob("*/*/*.png"):
        split, digit = path.parent.parent.name, path.parent.name
        items.append((split, int(digit), int(path.stem), path.read_bytes()))
    return _digest(items)


def digest_zip(archive: Path, dataset: str) -> tuple[str, dict[str, int]]:
    """digest() of the tree in the download stage's zip, every member of which is a PNG under
    `dataset`/ (so the dataset's name is checked too)."""
    items = []
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            top, split, digit, file = name.split("/")
            assert top == dataset and file.endswith(".png"), name
            items.append((split, int(digit), int(file[: -len(".png")]), zf.read(name)))
    return _digest(items)


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders left anywhere under root."""
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp"))
