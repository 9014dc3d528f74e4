"""`mnist-basics serve`: a local page to draw a digit and watch the model guess it as you draw.

A small ASGI app (starlette, served by uvicorn) with one static HTML page (app.html) whose script
draws on a canvas with pointer events (mouse, pen or finger) and POSTs the canvas as a PNG to
/predict while you draw. The answer: the guessed digit, each class's probability (drawn as bars)
and the 28x28 image the model saw, brought to MNIST's form by mnist_basics.preprocess exactly as
`mnist-basics predict` does. Two selectors pick the models of any experiment or git revision
(DVC's experiment refs, git branches and tags, plus the workspace), so two models can be compared
on one drawing. The page loads nothing from outside the machine: no CDN, no web font, no
telemetry. Install with `pip install -e '.[app]'`.
"""

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from mnist_basics import images, predict
from mnist_basics.errors import UserError
from mnist_basics.preprocess import ImageError, prepare

if TYPE_CHECKING:  # imported only to serve: the missing `app` extra is then one clear line
    import uvicorn
    from starlette.applications import Starlette

MAX_BODY = 5_000_000  # bytes of one posted PNG
BODY_SECONDS = 10  # to receive one posted PNG; the page's are a few kB
HEADER_SECONDS = 10  # to send a request's headers, from connecting or from the last answer
MAX_PIXELS = 4_000_000  # of one posted drawing (the page's pad is 280x280): checked before decoding
CACHED_MODELS = 8
# Drawings are decoded in these two threads only: each may cost 100+ MB, and every thread that
# allocates it keeps its own malloc arena, so the pool's 40 threads would each hold that much.
PREPARING = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="prepare")
TOO_LARGE = {"error": f"image larger than {MAX_BODY} bytes"}


EXP_REF = re.compile(r"refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/(.+)")  # DVC's: commit, then name
KINDS = {"refs/tags/": "tag", "refs/heads/": "branch"}  # git's order for a name that is both
AMBIGUOUS = "ambiguous"
REMOTE_URL = r"^remote\..*\.(push)?url$"


def ref_lines(repo: Path) -> tuple[str, ...]:
    """Every ref and its commit (tags peeled), then HEAD's, then `remote NAME` for each remote;
    none outside a repository. The key of the caches below, which hold until a ref changes."""
    try:
        r = predict.git(repo, "for-each-ref", "--format=%(*objectname) %(objectname) %(refname)")
        head = predict.git(repo, "rev-parse", "-q", "--verify", "HEAD").stdout.split()
        # libgit2's remotes, so DVC's: a config section with a url or pushurl, not just any
        keys = predict.git(repo, "config", "-z", "--name-only", "--get-regexp", REMOTE_URL)
    except predict.NO_GIT:
        return ()
    remotes = sorted(
        {k.removeprefix("remote.").rsplit(".", 1)[0] for k in keys.stdout.split("\0") if k}
    )
    lines = [s.strip() for s in r.stdout.splitlines() if s.strip()] if r.returncode == 0 else []
    lines += [f"{head[0]} HEAD"] if head else []
    return (*lines, *(f"remote {name}" for name in remotes))


@functools.lru_cache(maxsize=4)
def revisions(refs: tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """{name: (kind, commit)}, in the order DVC's `resolve_rev` tries them: git tags, branches,
    a name all remotes' branches agree on, then experiments (of several commits: HEAD's), then
    AMBIGUOUS for a name of neither kind that DVC cannot choose for."""
    out: dict[str, tuple[str, str | None]] = {predict.WORKSPACE: ("workspace", None)}
    pairs = [(line.split()[0], line.split()[-1]) for line in refs]
    for prefix, kind in KINDS.items():
        for commit, ref in pairs:
            if ref.startswith(prefix):
                out.setdefault(ref.removeprefix(prefix), (kind, commit))
    remotes: dict[str, set[str]] = {}  # name: the commits of the remotes' branches of that name
    for remote in (name for kind, name in pairs if kind == "remote"):  # as `git remote` lists
        for commit, ref in pairs:
            if ref.startswith(f"refs/remotes/{remote}/") and not ref.endswith("/HEAD"):
                remotes.setdefault(ref.removeprefix(f"refs/remotes/{remote}/"), set()).add(commit)
    for name, commits in remotes.items():
        if len(commits) == 1:
            out.setdefault(name, ("remote branch", *commits))
    head = next((commit for commit, ref in pairs if ref == "HEAD"), None)
    of_commits: dict[str, dict[str, str]] = {}  # name: {the commit it ran on: its own}
    for commit, ref in pairs:
        if m := EXP_REF.fullmatch(ref):
            of_commits.setdefault(m[3], {})[m[1] + m[2]] = commit
    for name, runs in of_commits.items():
        mine = next(iter(runs.values())) if len(runs) == 1 else runs.get(head or "")
        out.setdefault(name, ("experiment", mine) if mine else (AMBIGUOUS, None))
    for name in remotes:
        out.setdefault(name, (AMBIGUOUS, None))
    return out


def list_revisions(repo: Path) -> list[dict]:
    """What the selectors offer. Each entry: {"id": the --rev, "kind": workspace|experiment|
    branch|tag|remote branch}."""
    return [
        {"id": n, "kind": k} for n, (k, _) in revisions(ref_lines(repo)).items() if k != AMBIGUOUS
    ]


@functools.lru_cache(maxsize=256)
def _commit(repo: Path, rev: str, refs: tuple[str, ...]) -> str:
    """The commit a name or hex id names, by `predict --rev`'s (DVC's) rules; AMBIGUOUS, or ""
    for none."""
    try:
        return predict.commit_of(rev, str(repo))
    except predict.Ambiguous:
        return AMBIGUOUS
    except UserError:
        return ""


def commit_of(rev: str, repo: Path) -> str:
    """The commit a listed name or a commit's hex id names now; any other name is refused
    before git is asked (a re-run experiment or a moved branch names a new commit)."""
    refs = ref_lines(repo)
    commit = ""
    if rev in revisions(refs) or re.fullmatch(r"[0-9a-f]{4,40}", rev):
        commit = _commit(repo, rev, refs)
    if commit == AMBIGUOUS:
        raise predict.ambiguous(f"model {rev[:60]!r}")
    if not commit:
        raise UserError(
            f"unknown model {rev[:60]!r}: allowed: a name GET /models lists, or a commit's id"
        )
    return commit


_loading = threading.Lock()


@functools.lru_cache(maxsize=CACHED_MODELS)
def _cached_load(rev: str, repo: str, stamp: object) -> predict.LoadedModel:
    """The few most recently used models, each under a `stamp` of what it was read from."""
    return predict.load(rev, repo, commit="" if rev == predict.WORKSPACE else rev)


def model_at(rev: str, repo: Path) -> predict.LoadedModel:
    """Loaded one at a time (DVC is not re-entered), keyed by what it is read from: the
    workspace file's inode, mtime and size (`dvc repro` rewrote it), else the commit."""
    stamp = None
    if rev == predict.WORKSPACE:
        with contextlib.suppress(OSError):
            st = (repo / predict.MODEL_PATH).stat()
            stamp = st.st_ino, st.st_mtime_ns, st.st_size
    else:
        rev = commit_of(rev, repo)
    with _loading:
        return _cached_load(rev, str(repo), stamp)


def png_data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(images.png_bytes(image)).decode()


def answer(repo: Path, rev: str, body: bytes) -> tuple[int, dict]:
    """(HTTP status, JSON) for one posted drawing and revision `rev`'s model."""
    try:
        model = model_at(rev, repo)
    except UserError as e:
        return 404, {"error": str(e)}
    try:
        prepared = PREPARING.submit(prepare, body, max_pixels=MAX_PIXELS, formats=["PNG"]).result()
    except ImageError as e:
        if str(e).startswith("no ink"):
            return 200, {"empty": True, "model": rev, "digits": list(model.digits)}
        return 400, {"error": str(e)}
    try:
        pred = predict.predict_prepared(model, [("drawing", prepared)])[0]
    except UserError as e:  # a model whose outputs overflow: the revision's fault, not ours
        return 422, {"error": str(e)}
    return 200, {
        "empty": False,
        "model": rev,
        "digit": pred.digit,
        "digits": list(model.digits),
        "probabilities": [pred.probabilities[d] for d in model.digits],
        "image": png_data_url(prepared.image()),
        "spec": model.spec,
    }


def refusal(host: str, origin: str | None, listen: str, server: tuple[str, int]) -> str | None:
    """Why a request is refused, if it is: a Host other than the names of this server (a
    DNS-rebinding page under another name), or an Origin other than its own (a cross-site POST).
    """
    addr, port = server
    names = {"127.0.0.1", "localhost", "[::1]", listen, f"[{addr}]" if ":" in addr else addr}
    if host not in {f"{n}:{port}" for n in names}:
        return f"Host {host!r} is not this server's; allowed: {sorted(names)} with port {port}"
    if origin is not None and origin != f"http://{host}":
        return f"Origin {origin!r} is another site's; only http://{host} may use this server"
    return None


def create_app(repo: Path | str = ".", host: str = "127.0.0.1") -> "Starlette":
    """The ASGI app: GET / (the page), GET /models, POST /predict?model=REV (body: a PNG)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    repo = Path(repo).resolve()
    page_html = (Path(__file__).parent / "app.html").read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        return HTMLResponse(page_html, headers={"Cache-Control": "no-store"})

    async def revisions(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(list_revisions, repo))

    async def guess(request: Request) -> Response:
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > MAX_BODY:  # refused before it is read
            return JSONResponse(TOO_LARGE, 413)
        rev = request.query_params.get("model", predict.WORKSPACE)
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_SECONDS):  # a body a byte at a time holds no slot
                async for chunk in request.stream():  # chunked too: refused once past the cap
                    body += chunk
                    if len(body) > MAX_BODY:
                        return JSONResponse(TOO_LARGE, 413, headers={"Connection": "close"})
        except TimeoutError:
            why = {"error": f"the body did not arrive within {BODY_SECONDS} s"}
            return JSONResponse(why, 408, headers={"Connection": "close"})
        except ClientDisconnect:  # the page was closed mid-upload: nobody to answer
            return Response(status_code=400)
        body = bytes(body)
        status, data = await run_in_threadpool(answer, repo, rev, body)
        return JSONResponse(data, status)

    async def no_favicon(request: Request) -> Response:  # no 404 in the browser's console
        return Response(status_code=204)

    async def guard(request: Request, call_next) -> Response:
        why = refusal(
            request.headers.get("host", ""),
            request.headers.get("origin"),
            host,
            request.scope["server"],
        )
        if why:  # and the connection closed: a foreign page's keep-alives hold no slot
            status = 421 if why.startswith("Host") else 403
            return JSONResponse({"error": why}, status, headers={"Connection": "close"})
        return await call_next(request)

    return Starlette(
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
        routes=[
            Route("/", page),
            Route("/models", revisions),
            Route("/predict", guess, methods=["POST"]),
            Route("/favicon.ico", no_favicon),
        ],
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
    app = create_app(args.repo, args.host)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        limit_concurrency=64,
        http=headers_in_time(),
    )
    server = uvicorn.Server(config)
    threading.Thread(target=announce, args=(server,), daemon=True).start()
    server.run()
    return 0


def headers_in_time() -> type:
    """uvicorn's HTTP protocol, closing a connection with no request in progress HEADER_SECONDS
    after it opened or was answered: uvicorn waits for headers, or for the rest of a body it did
    not read, for ever, so 64 trickling clients held every slot."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadersInTime(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.deadline = self.loop.call_later(HEADER_SECONDS, self.close_if_no_request)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.deadline.cancel()
            self.deadline = self.loop.call_later(HEADER_SECONDS, self.close_if_no_request)

        def close_if_no_request(self) -> None:
            # IDLE: no request's headers complete; DONE: answered, the body it did not need
            # still coming (uvicorn's keep-alive timer stops at its first byte)
            if self.conn.our_state in (h11.IDLE, h11.DONE):
                self.transport.close()

    return HeadersInTime


def announce(server: "uvicorn.Server") -> None:
    """Once uvicorn listens, print its address with the port the OS gave (--port 0)."""
    while not server.started:
        time.sleep(0.05)
    for sock in (sock for s in server.servers for sock in s.sockets):
        host, port = sock.getsockname()[:2]
        print(f"serve: http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
