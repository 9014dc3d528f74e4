"""`mnist-basics serve`: the drawing page, served for real (uvicorn on a free port) and used in
real headless Chromium with real mouse events, offline: nothing leaves the machine."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from use_models import revisions_repo

if os.environ.get("CI") != "true":
    pytest.importorskip("starlette", reason="the page needs the app extra: pip install -e '.[app]'")
    pytest.importorskip("uvicorn", reason="the page needs the app extra: pip install -e '.[app]'")

# A 7 in the 280x280 pad's coordinates: the bar, then the stem.
SEVEN = [(70, 60), (210, 60), (120, 235)]


class Server:
    """`mnist-basics serve` in a subprocess; its URL read from the line it prints."""

    def __init__(self, repo: Path, *args: str, timeout: float = 120) -> None:
        self.repo = repo
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_basics.cli",
                "serve",
                "--port",
                "0",
                "--repo",
                str(repo),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"serve exited {self.proc.wait()}: {self.lines}")
            self.lines.append(line)
            if line.startswith("serve: http://"):
                self.url = line.split()[1]
                return
        self.stop()
        raise AssertionError(f"serve did not start in {timeout}s: {self.lines}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path, data=body, method="POST", headers={"Content-Type": "image/png"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return revisions_repo(tmp_path_factory.mktemp("serve") / "repo")


@pytest.fixture(scope="module")
def server(repo: Path):
    s = Server(repo)
    yield s
    s.stop()


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_listens_on_localhost_and_lists_revisions(server: Server) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    revs = server.get("models")
    assert revs[0] == {"id": "workspace", "kind": "workspace"}
    assert {"id": "main", "kind": "branch"} in revs
    assert {"id": "v1", "kind": "tag"} in revs


def test_the_workspace_model_is_reloaded_once_rewritten(repo: Path, tmp_path: Path) -> None:
    """After `dvc repro` writes a new workspace model, the page predicts with it, not the old."""
    from use_models import small_model

    from mnist_basics import app
    from mnist_basics.models import save_tensors
    from mnist_basics.predict import MODEL_PATH, WORKSPACE

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    before = app.model_at(WORKSPACE, copy)
    assert app.model_at(WORKSPACE, copy) is before  # cached while the file is the same
    model, spec = small_model([1, 2], steps=5)
    target = copy / MODEL_PATH
    target.unlink()  # a DVC link or copy: replace it, as dvc repro does
    save_tensors(model.state_dict(), spec, target)
    after = app.model_at(WORKSPACE, copy)
    assert after.digits == (1, 2) != before.digits


def test_a_model_whose_outputs_overflow_is_a_json_422(repo: Path, tmp_path: Path) -> None:
    """Finite weights of 3e38: every logit is inf. The page gets the reason, not a 500."""
    from PIL import ImageDraw
    from use_models import small_model

    from mnist_basics import app
    from mnist_basics.models import save_tensors
    from mnist_basics.predict import MODEL_PATH, WORKSPACE

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    model, spec = small_model([3, 7], steps=1)
    for p in model.parameters():
        p.data.fill_(3e38)
    (copy / MODEL_PATH).unlink()
    save_tensors(model.state_dict(), spec, copy / MODEL_PATH)
    im = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(im).line(SEVEN, fill=0, width=20)
    status, data = app.answer(copy, WORKSPACE, png(im))
    assert status == 422 and "not finite" in data["error"], (status, data)


def test_a_branch_moved_by_a_commit_serves_its_new_model(repo: Path, tmp_path: Path) -> None:
    """A branch or tag is cached by the commit it names, not by its name."""
    from use_models import DVC, run, write_model

    from mnist_basics import app
    from mnist_basics.predict import MODEL_PATH

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    before = app.model_at("main", copy)
    assert app.model_at("main", copy) is before and before.digits == (3, 7)
    (copy / MODEL_PATH).unlink()
    write_model(copy / MODEL_PATH, [1, 2])
    run(copy, DVC, "add", "-q", MODEL_PATH)
    run(copy, "git", "commit", "-qam", "1 vs 2")
    assert app.model_at("main", copy).digits == (1, 2)
    assert app.model_at("v1", copy).digits == tuple(range(10))


def test_predict_endpoint(server: Server) -> None:
    from test_predict import seven

    from mnist_basics.predict import load, predict_prepared
    from mnist_basics.preprocess import prepare

    body = png(seven())
    status, d = server.post("predict?model=v1", body)
    assert status == 200 and not d["empty"]
    assert d["digits"] == list(range(10)) and len(d["probabilities"]) == 10
    ref = predict_prepared(load("v1", repo=str(server.repo)), [("x", prepare(body))])[0]
    assert d["digit"] == ref.digit
    assert d["probabilities"] == pytest.approx([ref.probabilities[k] for k in range(10)], abs=1e-6)
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(d["image"].split(",", 1)[1]))))
    assert np.array_equal(seen, prepare(body).pixels)
    status, d = server.post("predict", png(Image.new("RGB", (280, 280), "white")))
    assert (status, d["empty"]) == (200, True)
    from test_predict_hostile import EPS, progressive_jpeg

    # The page posts PNG: nothing else is decoded (Ghostscript, a JPEG's endless scans).
    for other in (b"not a png", EPS, progressive_jpeg(28, 0), png(seven()).replace(b"PNG", b"GNP")):
        status, d = server.post("predict", other)
        assert (status, d) == (400, {"error": "not a PNG image"}), other[:20]
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=server.repo,
        input="x\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for name in ("nope", "workspace%00", "HEAD:models", "HEAD%5E%7Btree%7D", blob, "x" * 1024):
        status, d = server.post(f"predict?model={name}", body)
        assert status == 404 and d["error"].startswith("unknown model"), (name, d)
        assert "\n" not in d["error"] and len(d["error"]) < 200


def test_a_huge_image_in_a_small_body_is_refused_before_decoding(server: Server) -> None:
    """6000x6000 RGBA: about 150 kB of PNG, 144 MB once decoded."""
    body = png(Image.new("RGBA", (6000, 6000), (255, 255, 255, 0)))
    assert len(body) < 1_000_000
    status, d = server.post("predict", body)
    assert status == 400 and "6000x6000 pixels is too large" in d["error"]


def test_a_chunked_body_past_the_cap_is_refused_before_it_ends(server: Server) -> None:
    """The body never ends: the answer comes once the cap is passed, not after the whole."""
    import socket
    from urllib.parse import urlsplit

    from mnist_basics import app

    u = urlsplit(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        s.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {u.netloc}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (1 << 16, bytes(1 << 16))
        for _ in range(app.MAX_BODY // (1 << 16) + 1):  # no closing 0-chunk is ever sent
            s.sendall(chunk)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_body_that_stops_or_trickles_costs_no_traceback_and_no_slot(repo: Path) -> None:
    """A tab closed mid-upload: no traceback in the server's log. A body that never completes:
    408 once BODY_SECONDS have passed, not a connection held for ever."""
    import socket
    from urllib.parse import urlsplit

    s = Server(repo)
    try:
        u = urlsplit(s.url)
        head = f"POST /predict HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: 100\r\n\r\n"
        with socket.create_connection((u.hostname, u.port), timeout=60) as c:
            c.sendall(head.encode() + b"xxxxx")
            time.sleep(0.5)
        with socket.create_connection((u.hostname, u.port), timeout=60) as c:
            c.sendall(head.encode() + b"xxxxx")
            answer = c.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert s.get("models")[0]["id"] == "workspace"  # and the server still answers
    finally:
        s.stop()
    log = s.proc.stderr.read()
    assert "Traceback" not in log, log


@contextlib.contextmanager
def raw_clients(
    repo: Path,
    n: int,
    rcvbuf: int | None = None,
    first: Callable[[str, int], bytes] | None = None,
) -> Iterator[tuple[list[socket.socket], str]]:
    """n raw connections to a new server (each with a receive buffer of `rcvbuf` bytes, if
    given, and sending `first(Host, i)` as it connects: the server closes the oldest of those
    that send nothing), and its Host; afterwards the server must answer again and have logged no
    traceback."""
    s = Server(repo)
    u = urlsplit(s.url)
    clients = [socket.socket() for _ in range(n)]
    for i, c in enumerate(clients):
        if rcvbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.settimeout(30)
        c.connect((u.hostname, u.port))
        if first:
            c.sendall(first(u.netloc, i))
    try:
        yield clients, u.netloc
        assert s.get("models")[0]["id"] == "workspace"
    finally:
        for c in clients:
            c.close()
        s.stop()
    log = s.proc.stderr.read()
    assert "Traceback" not in log, log


def test_headers_that_never_end_hold_no_slot(repo: Path) -> None:
    """More trickling clients than uvicorn's 64 slots, each sending part of its headers: each is
    closed once HEADER_SECONDS have passed, and the server answers again."""
    with raw_clients(repo, 70, first=lambda host, i: b"GET /models HTTP/1.1\r\nHo") as (slow, _):
        for c in slow:
            assert c.recv(4096) == b""  # closed by the server, not a timeout here


def test_connections_that_send_nothing_hold_few_slots(repo: Path) -> None:
    """A page's preconnects to a0.localhost ... a149.localhost (a browser pool each, all to
    127.0.0.1) send nothing, so no Host is ever checked: they held all 64 slots (503 to the
    user). Past MAX_SILENT the oldest is closed, and a request is answered at once."""
    from mnist_basics import app

    with raw_clients(repo, 70) as (silent, netloc):
        time.sleep(1)
        host, port = netloc.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as c:
            c.sendall(
                f"GET /models HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n\r\n".encode()
            )
            assert read_to_close(c).startswith(b"HTTP/1.1 200"), "the slots were held"
        established = 1  # linux/tcp_states.h: TCP_ESTABLISHED
        held = [
            c
            for c in silent
            if c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == established
        ]
        assert 0 < len(held) <= app.MAX_SILENT


def test_a_body_still_coming_after_the_answer_holds_no_slot(repo: Path) -> None:
    """Requests the server answers without reading their body (a GET's 413, a foreign Host's
    421) whose clients then send one more byte and wait: each is closed, not left waiting for
    the rest (uvicorn's keep-alive timer stops at that byte), and the server answers again."""

    def request(host: str, i: int) -> bytes:
        host = host if i < 60 else "evil.example"
        return f"GET /models HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n\r\n".encode()

    with raw_clients(repo, 70, first=request) as (slow, _):
        for c in slow:
            assert c.recv(65536).startswith(b"HTTP/1.1 ")  # answered (200, 421 or 503)
            with contextlib.suppress(ConnectionError):  # a 503 closes at once
                c.sendall(b"x")
        for c in slow:
            with contextlib.suppress(ConnectionResetError):  # closed with our byte unread
                while c.recv(65536):  # the rest of a long answer, then the close
                    pass


def read_to_close(c: socket.socket) -> bytes:
    """Every byte the server sends until it closes (a reset after the answer counts as one)."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := c.recv(65536):
            got += chunk
    return got


def test_a_body_no_route_reads_is_refused_and_not_drained(server: Server) -> None:
    """A body sent anywhere but POST /predict, or past the cap there: 413 and the connection
    closed at once (not read and thrown away until the deadline: gigabytes of a local sender's
    chunks, at a cost to every other request)."""
    from mnist_basics import app

    u = urlsplit(server.url)
    heads = [
        "POST /favicon.ico HTTP/1.1\r\nTransfer-Encoding: chunked",
        "GET /models HTTP/1.1\r\nContent-Length: 1000000",
        "PUT /predict HTTP/1.1\r\nContent-Length: 10",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked",
        f"POST /predict HTTP/1.1\r\nContent-Length: {app.MAX_BODY + 1}",
    ]
    for head in heads:  # headers alone: the body would never end
        with socket.create_connection((u.hostname, u.port), timeout=app.HEADER_SECONDS / 2) as c:
            c.sendall(f"{head}\r\nHost: {u.netloc}\r\n\r\n".encode())
            answer = read_to_close(c)  # a timeout here: left open, to drain what comes
        assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer, head
    assert _raw(server, "GET", "/favicon.ico", {"Host": u.netloc})[0] == 204  # as before


def test_what_any_page_can_send_is_refused_and_logs_nothing(repo: Path) -> None:
    """Any page may open a WebSocket to serve, or load a URL of 300 kB: each refused (the guard's
    403, h11's 400), without a warning of uvicorn's per attempt in the log (one advised a
    WebSocket library)."""
    s = Server(repo)
    try:
        u = urlsplit(s.url)
        upgrade = (
            f"GET / HTTP/1.1\r\nHost: {u.netloc}\r\nOrigin: http://evil.example\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        long_url = f"GET /{'a' * 300_000} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n"
        for request, status in ((upgrade, b"403"), (long_url, b"400"), (long_url, b"400")):
            with socket.create_connection((u.hostname, u.port), timeout=30) as c:
                c.sendall(request.encode())
                assert read_to_close(c).startswith(b"HTTP/1.1 " + status)
    finally:
        s.stop()
    log = s.proc.stderr.read()  # after the line with the URL: the invalid one's once a minute
    assert log.splitlines() == ["WARNING:  Invalid HTTP request received."], log


def test_clients_that_never_read_their_answers_hold_no_slot(repo: Path) -> None:
    """More clients than uvicorn's 64 slots, each pipelining requests for the page and reading
    none of the answers: uvicorn waits to write for ever; each is dropped once HEADER_SECONDS
    pass with none of its answer read, and the server answers again."""
    from mnist_basics import app

    def pipelined(host: str, i: int) -> bytes:
        return f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() * 50

    with raw_clients(repo, 70, rcvbuf=4096, first=pipelined) as (clients, netloc):
        for c in clients:
            c.setblocking(False)
            with contextlib.suppress(OSError):  # until the server reads no more (or a 503)
                while True:
                    c.send(pipelined(netloc, 0))
        deadline = time.monotonic() + 3 * app.HEADER_SECONDS
        held = clients
        while held and time.monotonic() < deadline:
            time.sleep(1)
            established = 1  # linux/tcp_states.h: TCP_ESTABLISHED
            held = [
                c
                for c in held
                if c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == established
            ]
        assert not held, f"{len(held)} of {len(clients)} never-reading clients still held"


def test_a_ref_name_that_is_not_utf8_is_listed_not_a_500(repo: Path, tmp_path: Path) -> None:
    from test_predict import seven

    odd = tmp_path / "odd"
    shutil.copytree(repo, odd, symlinks=True)
    subprocess.run([b"git", b"branch", b"--", b"caf\xe9"], cwd=odd, check=True)
    s = Server(odd)
    try:
        ids = [r["id"] for r in s.get("models")]
        assert "caf\ufffd" in ids and "main" in ids
        assert s.post("predict?model=main", png(seven()))[0] == 200
    finally:
        s.stop()


def peak_kb(pid: int) -> int:
    """A process's peak resident memory (VmHWM), in kB."""
    return int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0])


def test_drawings_posted_at_once_are_decoded_a_few_at_a_time(repo: Path) -> None:
    """A 2000x2000 drawing is a 26 KB PNG and costs about 100 MB to decode and prepare: 16 at
    once must not cost 16 times that."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import ImageDraw

    im = Image.new("RGBA", (2000, 2000), "white")
    ImageDraw.Draw(im).line([(300, 300), (1700, 300), (800, 1800)], fill="black", width=120)
    body = png(im)
    s = Server(repo)
    try:
        assert s.post("predict", body)[0] == 200  # the model loaded, one drawing's peak reached
        before = peak_kb(s.proc.pid)
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda _: s.post("predict", body)[0], range(16)))
        assert codes == [200] * 16
        grew = peak_kb(s.proc.pid) - before
        assert grew < 500_000, f"{grew // 1000} MB more at the peak"
    finally:
        s.stop()


def canvas_png(page) -> bytes:
    url = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def shown(page, i: int) -> dict:
    return page.evaluate(
        f"""(() => ({{
          digit: document.getElementById('digit-{i}').textContent,
          bars: [...document.querySelectorAll('#bars-{i} .fill')].map(f => f.style.width),
          seen: document.getElementById('seen-{i}').naturalWidth,
          prediction: window.predictions[{i}],
        }}))()"""
    )


def draw_and_check(page, server_repo: str, points=SEVEN) -> dict:
    """Draw one stroke with real mouse events; wait for the page's guess; check it against the
    same model's prediction on the canvas PNG, computed here."""
    from mnist_basics.predict import load, predict_prepared
    from mnist_basics.preprocess import prepare

    page.wait_for("document.getElementById('model-0').options.length > 0")
    pad = page.box("#pad")
    page.drag(
        [(pad["x"] + x * pad["width"] / 280, pad["y"] + y * pad["height"] / 280) for x, y in points]
    )
    page.wait_for(
        "window.predictions[0] && window.predictions[0].digit !== undefined"
        " && document.getElementById('seen-0').naturalWidth === 28"
    )
    page.wait_for("window.idle()")  # the answer for the finished stroke
    page.wait_for("document.getElementById('digit-0').textContent !== '\u2013'")
    s = shown(page, 0)
    model = load(s["prediction"]["model"], repo=server_repo)
    ref = predict_prepared(model, [("canvas", prepare(canvas_png(page)))])[0]
    assert s["digit"] == str(ref.digit) == str(s["prediction"]["digit"])
    widths = [float(w.rstrip("%")) for w in s["bars"]]
    assert len(widths) == len(model.digits)
    assert widths == pytest.approx([100 * ref.probabilities[d] for d in model.digits], abs=0.06)
    assert s["seen"] == 28
    return s


@pytest.mark.e2e
def test_draw_in_chromium_offline(server: Server, repo: Path, chromium: Path, tmp_path: Path):
    from browser_page import Page

    with Page(server.url) as page:
        s = draw_and_check(page, str(repo))
        assert s["prediction"]["digits"] == [3, 7]  # the workspace's model
        # compare with the tag's ten-digit model on the same drawing
        page.evaluate(
            "(() => { const s = document.getElementById('model-1'); s.value = 'v1';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        page.wait_for("window.predictions[1] && window.predictions[1].model === 'v1'")
        s1 = shown(page, 1)
        assert s1["prediction"]["digits"] == list(range(10)) and len(s1["bars"]) == 10
        # each selector shows its whole label: the text's width, with room for the arrow
        for text, room in page.evaluate(
            "(() => { const c = document.createElement('canvas').getContext('2d');"
            " return [...document.querySelectorAll('select.model')].map(s => {"
            " c.font = getComputedStyle(s).font;"
            " return [s.selectedOptions[0].text, s.clientWidth - c.measureText("
            "s.selectedOptions[0].text).width]; }); })()"
        ):
            assert room >= 24, (text, room)
        assert s1["digit"] == str(s1["prediction"]["digit"])
        page.screenshot(tmp_path / "draw.png")
        assert Image.open(tmp_path / "draw.png").size == (1000, 700)
        page.click("#clear")
        page.wait_for("document.getElementById('digit-0').textContent === '\u2013'")
        assert shown(page, 0)["bars"] == [] and shown(page, 1)["bars"] == []
        result = page.result()
    assert result.external_requests == [], result.summary()
    assert result.errors == [], result.summary()


def test_host_option_and_missing_extra_message(repo: Path) -> None:
    from mnist_basics import app

    ap = __import__("argparse").ArgumentParser()
    app.add_arguments(ap)
    a = ap.parse_args([])
    assert (a.host, a.port) == ("127.0.0.1", 8000)
    assert ap.parse_args(["--host", "0.0.0.0", "--port", "9"]).host == "0.0.0.0"
    r = subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "serve", "--host", "", "--repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # an unset $HOST: every address, the network's too
    assert r.returncode == 2 and "an empty address listens on every one" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 2 and r.stderr.startswith("usage:"), r.stderr
    with pytest.raises(SystemExit):  # uvicorn's "[Errno -2] Name or service not known", exit 1
        ap.parse_args(["--host", "127.0.0.1 "])


def test_a_wildcard_listen_drops_other_loopback_addresses(repo: Path) -> None:
    """A browser keeps connections to 127.0.0.2, 127.0.0.3, ... in pools of their own: one page's
    preconnects to 150 of them held every slot of a `--host 0.0.0.0` serve (503 to the user)."""
    from mnist_basics import app

    s = Server(repo, "--host", "0.0.0.0")
    try:
        port = urlsplit(s.url).port
        at_once = app.HEADER_SECONDS / 2  # not by the deadline for a request's headers
        with socket.create_connection(("127.0.0.2", port), timeout=at_once) as c:
            assert read_to_close(c) == b""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=60) as r:
            assert json.loads(r.read())[0]["id"] == "workspace"
    finally:
        s.stop()


def _raw(server: Server, method: str, path: str, headers: dict[str, str], body: bytes = b""):
    """(status, body) of one request with exactly these Host/Origin headers."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.putrequest(method, path, skip_host=True)
    for k, v in {**headers, "Content-Length": str(len(body))}.items():
        conn.putheader(k, v)
    conn.endheaders(body)
    r = conn.getresponse()
    return r.status, r.read()


def test_a_refused_request_closes_its_connection(server: Server) -> None:
    """A foreign page's keep-alive connections, refused, would still hold serve's slots."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(server.url)
    own = f"127.0.0.1:{u.port}"
    for headers in ({"Host": "evil.example"}, {"Host": own, "Origin": "http://evil.example"}):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("GET", "/models", headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status in (403, 421) and r.getheader("Connection") == "close", headers
        conn.close()


def test_other_host_names_and_foreign_origins_are_refused(server: Server) -> None:
    """DNS rebinding: a page under another name reaches 127.0.0.1 but sends its own Host."""
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    status, body = _raw(server, "GET", "/models", {"Host": "evil.example"})
    assert status == 421 and b"main" not in body and b"evil.example" in body
    assert _raw(server, "GET", "/models", {"Host": f"evil.example:{port}"})[0] == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert _raw(server, "GET", "/models", {"Host": host})[0] == 200
    own = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    assert _raw(server, "GET", "/models", own)[0] == 200
    foreign = {
        "Host": f"127.0.0.1:{port}",
        "Origin": "http://evil.example",
        "Content-Type": "text/plain",
    }
    status, body = _raw(server, "POST", "/predict", foreign, b"x")
    assert status == 403 and b"Origin" in body


def test_a_request_another_page_sent_is_refused(server: Server) -> None:
    """A no-cors GET from another page carries no Origin, but the browser's Sec-Fetch-Site: a
    page on another port of localhost is `same-site`. Nor may a page frame this one."""
    import http.client
    from urllib.parse import urlsplit

    port = urlsplit(server.url).port
    own = {"Host": f"127.0.0.1:{port}"}
    for site in ("cross-site", "same-site"):
        status, body = _raw(server, "GET", "/models", {**own, "Sec-Fetch-Site": site})
        assert status == 403 and b"main" not in body and b"Sec-Fetch-Site" in body, site
    for site in ("same-origin", "none"):
        assert _raw(server, "GET", "/models", {**own, "Sec-Fetch-Site": site})[0] == 200, site
    # a link to the page from another site is followed: the page, not its API, for anyone, and
    # the connection closed after; a frame of it is refused (another site's frames, each kept
    # alive, held the slots)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "document"})
    r = conn.getresponse()
    assert (r.status, r.getheader("Connection")) == (200, "close") and b"<canvas" in r.read()
    conn.close()
    framed = {**own, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "iframe"}
    status, body = _raw(server, "GET", "/", framed)
    assert status == 403 and b"Sec-Fetch-Site" in body
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/")
    r = conn.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("X-Frame-Options") == "DENY"
    assert r.getheader("Content-Security-Policy") == "frame-ancestors 'none'"
    conn.close()


@pytest.mark.parametrize(
    ("host", "url"),
    [("::1", "http://[::1]:"), ("::", "http://[::]:"), ("127.2", "http://127.0.0.2:")],
)
def test_the_url_serve_prints_is_one_it_answers(repo: Path, host: str, url: str) -> None:
    """`--host ::`'s URL was refused (Host [::]); `--host 127.2`'s, 127.0.0.2, reset."""
    s = Server(repo, "--host", host)
    try:
        assert s.url.startswith(url)
        assert s.get("models")[0] == {"id": "workspace", "kind": "workspace"}
    finally:
        s.stop()
