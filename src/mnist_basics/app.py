"""`mnist-basics serve`: a local page to draw a digit and watch the model guess it as you draw.

A small ASGI app (starlette, served by uvicorn) with one static HTML page (app.html) whose script
draws on a canvas with pointer events (mouse, pen or finger) and POSTs the canvas as a PNG to
/predict while you draw. The answer: the guessed digit, each class's probability (drawn as bars)
and the 28x28 image the model saw, brought to MNIST's form by mnist_basics.preprocess exactly as
`mnist-basics predict` does. Two selectors pick the models of any experiment or git revision
(from `dvc exp list`, git branches and tags, plus the workspace), so two models can be compared
on one drawing. The page loads nothing from outside the machine: no CDN, no web font, no
telemetry. Install with `pip install -e '.[app]'`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from mnist_basics.errors import UserError
from mnist_basics.predict import MODEL_PATH, WORKSPACE, LoadedModel, load, predict_prepared
from mnist_basics.preprocess import ImageError, prepare

if TYPE_CHECKING:  # imported only to serve: the missing `app` extra is then one clear line
    import uvicorn
    from starlette.applications import Starlette

MAX_BODY = 5_000_000  # bytes of one posted PNG
CACHED_MODELS = 8
TOO_LARGE = {"error": f"image larger than {MAX_BODY} bytes"}
DVC = shutil.which("dvc", path=Path(sys.executable).parent) or "dvc"  # ours, else PATH's


def _lines(args: list[str], cwd: Path) -> list[str]:
    """A command's non-empty output lines; none if it fails (no DVC, not a git repository)."""
    try:
        r = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [s.strip() for s in r.stdout.splitlines() if s.strip()] if r.returncode == 0 else []


def list_revisions(repo: Path) -> list[dict]:
    """What the selectors offer: the workspace, then DVC experiments (of every commit), git
    branches and tags. Each entry: {"id": the --rev, "kind": workspace|experiment|branch|tag}."""
    refs = ["git", "for-each-ref", "--format=%(refname:short)"]
    commands = {
        "experiment": [DVC, "exp", "list", "--all-commits", "--name-only"],
        "branch": [*refs, "refs/heads"],
        "tag": [*refs, "refs/tags"],
    }
    out = [{"id": WORKSPACE, "kind": "workspace"}]
    for kind, command in commands.items():
        for name in _lines(command, repo):
            if all(r["id"] != name for r in out):
                out.append({"id": name, "kind": kind})
    return out


_loading = threading.Lock()


@functools.lru_cache(maxsize=CACHED_MODELS)
def _cached_load(rev: str, repo: str, stamp: object) -> LoadedModel:
    """The few most recently used models, each under a `stamp` of what it was read from."""
    return load(rev, repo)


def _stamp(rev: str, repo: Path) -> object:
    """What changes when `rev`'s model may have: the workspace file's inode, mtime and size
    (`dvc repro` rewrote it), or the commit a branch or tag names (a commit moved it)."""
    if rev == WORKSPACE:
        with contextlib.suppress(OSError):
            st = (repo / MODEL_PATH).stat()
            return st.st_ino, st.st_mtime_ns, st.st_size
        return None
    commit = _lines(
        ["git", "rev-parse", "-q", "--verify", "--end-of-options", f"{rev}^{{commit}}"], repo
    )
    return commit[0] if commit else None  # a DVC experiment: its name stays with its run


def model_at(rev: str, repo: Path) -> LoadedModel:
    """Loaded one at a time: DVC is not re-entered, and a model asked for twice is read once."""
    stamp = _stamp(rev, repo)
    with _loading:
        return _cached_load(rev, str(repo), stamp)


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def answer(repo: Path, rev: str, body: bytes) -> tuple[int, dict]:
    """(HTTP status, JSON) for one posted drawing and revision `rev`'s model."""
    if len(body) > MAX_BODY:
        return 413, TOO_LARGE
    try:
        model = model_at(rev, repo)
    except UserError as e:
        return 404, {"error": str(e)}
    try:
        prepared = prepare(body)
    except ImageError as e:
        if str(e).startswith("no ink"):
            return 200, {"empty": True, "model": rev, "digits": list(model.digits)}
        return 400, {"error": str(e)}
    pred = predict_prepared(model, [("drawing", prepared)])[0]
    return 200, {
        "empty": False,
        "model": rev,
        "digit": pred.digit,
        "digits": list(model.digits),
        "probabilities": [pred.probabilities[d] for d in model.digits],
        "image": png_data_url(prepared.image()),
        "spec": model.spec,
    }


def create_app(repo: Path | str = ".") -> Starlette:
    """The ASGI app: GET / (the page), GET /models, POST /predict?model=REV (body: a PNG)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    repo = Path(repo).resolve()
    page_html = (Path(__file__).parent / "app.html").read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        return HTMLResponse(page_html, headers={"Cache-Control": "no-store"})

    async def revisions(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(list_revisions, repo))

    async def predict(request: Request) -> Response:
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > MAX_BODY:  # refused before it is read
            return JSONResponse(TOO_LARGE, 413)
        rev = request.query_params.get("model", WORKSPACE)
        body = await request.body()
        status, data = await run_in_threadpool(answer, repo, rev, body)
        return JSONResponse(data, status)

    async def no_favicon(request: Request) -> Response:  # no 404 in the browser's console
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/models", revisions),
            Route("/predict", predict, methods=["POST"]),
            Route("/favicon.ico", no_favicon),
        ]
    )


def _port(text: str) -> int:
    """argparse's type for --port: its own one-line error for anything not 0..65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: a number 0..65535")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1: this machine only; 0.0.0.0 lets anyone on the "
        "network list the repo's branches, tags and experiments and run its models)",
    )
    parser.add_argument("--port", type=_port, default=8000, help="port (8000; 0: any free one)")
    parser.add_argument(
        "--repo", type=Path, default=Path("."), help="the project (default: the current folder)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise UserError(
            "the page needs the `app` extra: pip install -e '.[app]' (starlette, uvicorn)"
        ) from None
    import torch

    torch.set_num_threads(1)
    app = create_app(args.repo)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=announce, args=(server,), daemon=True).start()
    server.run()
    return 0


def announce(server: uvicorn.Server) -> None:
    """Once uvicorn listens, print its address with the port the OS gave (--port 0)."""
    while not server.started:
        time.sleep(0.05)
    for sock in (sock for s in server.servers for sock in s.sockets):
        host, port = sock.getsockname()[:2]
        print(f"serve: http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
