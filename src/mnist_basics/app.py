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
import io
import logging
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from mnist_basics import predict as predict_mod
from mnist_basics.errors import UserError
from mnist_basics.preprocess import ImageError, prepare

NAME = "serve"
HELP = "a local page to draw a digit and see the model's guess"
MAX_BODY = 5_000_000  # bytes of one posted PNG
CACHED_MODELS = 8

log = logging.getLogger("mnist_basics")


def _dvc() -> str:
    exe = Path(sys.executable).parent / "dvc"
    return str(exe) if exe.exists() else "dvc"


def _lines(args: list[str], cwd: Path) -> list[str]:
    try:
        r = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [s.strip() for s in r.stdout.splitlines() if s.strip()] if r.returncode == 0 else []


def list_revisions(repo: Path) -> list[dict]:
    """What the selector offers: the workspace, then DVC experiments (of every commit), git
    branches and tags. Each entry: {"id": the --rev, "kind": workspace|experiment|branch|tag}."""
    out = [{"id": predict_mod.WORKSPACE, "kind": "workspace"}]
    seen = {predict_mod.WORKSPACE}
    exps = _lines([_dvc(), "exp", "list", "--all-commits", "--name-only"], repo)
    branches = _lines(["git", "for-each-ref", "--format=%(refname:short)", "refs/heads"], repo)
    tags = _lines(["git", "for-each-ref", "--format=%(refname:short)", "refs/tags"], repo)
    for kind, names in (("experiment", exps), ("branch", branches), ("tag", tags)):
        for n in names:
            if n not in seen:
                seen.add(n)
                out.append({"id": n, "kind": kind})
    return out


class Models:
    """Loaded models by revision id, the few most recently used kept in memory."""

    def __init__(self, repo: Path, model_path: str = predict_mod.MODEL_PATH) -> None:
        self.repo = repo
        self.model_path = model_path
        self._cache: OrderedDict[str, predict_mod.LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._revisions: list[dict] | None = None

    def revisions(self, refresh: bool = False) -> list[dict]:
        with self._lock:
            if self._revisions is None or refresh:
                self._revisions = list_revisions(self.repo)
            return self._revisions

    def get(self, rev: str) -> predict_mod.LoadedModel:
        with self._lock:
            if rev in self._cache:
                self._cache.move_to_end(rev)
                return self._cache[rev]
            model = predict_mod.load(rev, self.model_path, str(self.repo))
            self._cache[rev] = model
            while len(self._cache) > CACHED_MODELS:
                self._cache.popitem(last=False)
            return model


def png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def answer(models: Models, rev: str, body: bytes) -> tuple[int, dict]:
    """(HTTP status, JSON) for one posted drawing and one model."""
    if len(body) > MAX_BODY:
        return 413, {"error": f"image larger than {MAX_BODY} bytes"}
    try:
        model = models.get(rev)
    except UserError as e:
        return 404, {"error": str(e)}
    try:
        prepared = prepare(body)
    except ImageError as e:
        if str(e).startswith("no ink"):
            return 200, {"empty": True, "model": rev, "digits": list(model.digits)}
        return 400, {"error": str(e)}
    pred = predict_mod.predict_prepared(model, [("drawing", prepared)])[0]
    return 200, {
        "empty": False,
        "model": rev,
        "digit": pred.digit,
        "digits": list(model.digits),
        "probabilities": [pred.probabilities[d] for d in model.digits],
        "image": png_data_url(prepared.image()),
        "spec": model.spec,
    }


def create_app(repo: Path | str = ".", model_path: str = predict_mod.MODEL_PATH):
    """The ASGI app: GET / (the page), GET /models, POST /predict?model=REV (body: a PNG)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    models = Models(Path(repo).resolve(), model_path)
    page_html = (Path(__file__).parent / "app.html").read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        return HTMLResponse(page_html, headers={"Cache-Control": "no-store"})

    async def revisions(request: Request) -> Response:
        refresh = request.query_params.get("refresh") == "1"
        return JSONResponse(await run_in_threadpool(models.revisions, refresh))

    async def predict(request: Request) -> Response:
        rev = request.query_params.get("model", predict_mod.WORKSPACE)
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > MAX_BODY:
            return JSONResponse({"error": f"image larger than {MAX_BODY} bytes"}, 413)
        body = await request.body()
        status, data = await run_in_threadpool(answer, models, rev, body)
        return JSONResponse(data, status)

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/models", revisions),
            Route("/predict", predict, methods=["POST"]),
            Route("/favicon.ico", favicon),
        ]
    )
    app.state.models = models
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free one)")
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

    def announce() -> None:  # once listening: the address, with the port the OS gave
        import time

        while not server.started:
            time.sleep(0.05)
        for s in server.servers:
            for sock in s.sockets:
                host, port = sock.getsockname()[:2]
                print(f"serve: http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"mnist-basics {NAME}", description=HELP)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as e:
        print(f"{NAME}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
