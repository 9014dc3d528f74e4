"""`mnist-basics serve`: a local page (app.html) to draw a digit and watch the guesses, as you
draw, of two models of any experiment, branch, tag or the workspace, on the drawing brought to
MNIST's form as `predict` does. Nothing is loaded from outside the machine. Needs the `app` extra.
"""

import argparse
import array
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import functools
import ipaddress
import logging
import re
import socket
import sys
import termios
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mnist_basics import images, predict
from mnist_basics.errors import UserError
from mnist_basics.preprocess import ImageError, prepare

if TYPE_CHECKING:  # imported only to serve: the missing `app` extra is then one clear line
    import uvicorn
    from starlette.applications import Starlette

MAX_BODY = 5_000_000  # bytes of one posted PNG
BODY_SECONDS = 10  # to receive one posted PNG; the page's are a few kB
HEADER_SECONDS = 10  # to send a request's headers, from connecting or from the last answer
MAX_SILENT = 16  # connections that have sent nothing yet: past it, the oldest is closed
MAX_PIXELS = 4_000_000  # of one posted drawing (the page's pad is 280x280): checked before decoding
CACHED_MODELS = 8
# Drawings are decoded in 2 threads, not the pool's 40: each may cost 100+ MB, kept per thread
# in its own malloc arena.
PREPARING = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="prepare")
TOO_LARGE = {"error": f"image larger than {MAX_BODY} bytes"}
EXP_REF = re.compile(r"refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/([^/]+)")  # DVC's: base, name
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
    # by "\n" and " " alone: a ref name may hold U+2028 or U+0085, which splitlines() splits on
    lines = [s.strip(" ") for s in r.stdout.split("\n") if r.returncode == 0 and s.strip(" ")]
    lines += [f"{head[0]} HEAD"] if head else []
    return (*lines, *(f"remote {name}" for name in remotes))


@functools.lru_cache(maxsize=4)
def shadowed(repo: Path, refs: tuple[str, ...]) -> frozenset[str]:
    """Experiment names git reads as something else (a short id of a commit, the one it ran on
    too, or of a blob; `HEAD`): DVC asks git first, so such a name is not the experiment's."""
    exps: dict[str, set[str]] = {}  # name: the experiments' own commits
    for line in refs:
        if m := EXP_REF.fullmatch(line.split(" ")[-1]):
            exps.setdefault(m[3], set()).add(line.split(" ")[0])
    if not exps:
        return frozenset()
    asked = "".join(f"{name}\n" for name in exps)  # a ref name holds no newline
    try:
        r = predict.git(repo, "cat-file", "--batch-check=%(objectname)", input=asked)
    except predict.NO_GIT:
        return frozenset()
    said = r.stdout.split("\n") if r.returncode == 0 else []
    return frozenset(
        name
        for (name, commits), line in zip(exps.items(), said, strict=False)
        if re.fullmatch(r"[0-9a-f]{40}", line) and line not in commits
    )


@functools.lru_cache(maxsize=4)
def revisions(refs: tuple[str, ...], hidden: frozenset[str] = frozenset()) -> dict[str, str]:
    """{name: kind}, in the order DVC's `resolve_rev` tries them: git tags, branches, a name all
    remotes' branches agree on, then experiments (of several commits: HEAD's; `hidden`: git
    names another commit so), then AMBIGUOUS for a name of neither kind that DVC cannot choose
    for."""
    out = {predict.WORKSPACE: "workspace"}
    pairs = [(line.split(" ")[0], line.split(" ")[-1]) for line in refs]
    for prefix, kind in KINDS.items():
        for _, ref in pairs:
            if ref.startswith(prefix):
                out.setdefault(ref.removeprefix(prefix), kind)
    remotes: dict[str, set[str]] = {}  # name: the commits of the remotes' branches of that name
    for remote in (name for kind, name in pairs if kind == "remote"):  # as `git remote` lists
        for commit, ref in pairs:
            if ref.startswith(f"refs/remotes/{remote}/") and not ref.endswith("/HEAD"):
                remotes.setdefault(ref.removeprefix(f"refs/remotes/{remote}/"), set()).add(commit)
    for name, commits in remotes.items():
        if len(commits) == 1:
            out.setdefault(name, "remote branch")
    head = next((commit for commit, ref in pairs if ref == "HEAD"), None)
    ran_on: dict[str, set[str]] = {}  # name: the commits its experiments ran on
    for _, ref in pairs:
        if m := EXP_REF.fullmatch(ref):
            ran_on.setdefault(m[3], set()).add(m[1] + m[2])
    for name, bases in ran_on.items():
        one = (len(bases) == 1 or head in bases) and name not in hidden
        out.setdefault(name, "experiment" if one else AMBIGUOUS)
    for name in remotes:
        out.setdefault(name, AMBIGUOUS)
    return out


def list_revisions(repo: Path) -> list[dict]:
    """What the selectors offer: {"id": the --rev, "kind": its kind}, none ambiguous."""
    refs = ref_lines(repo)
    listed = revisions(refs, shadowed(repo, refs))
    return [{"id": n, "kind": k} for n, k in listed.items() if k != AMBIGUOUS]


@functools.lru_cache(maxsize=256)
def _commit(repo: Path, rev: str, refs: tuple[str, ...]) -> str:
    """`predict --rev`'s (DVC's) answer, AMBIGUOUS or "" for none, cached until `refs` change."""
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
    listed = rev in revisions(refs) or re.fullmatch(r"[0-9a-f]{4,40}", rev)
    commit = _commit(repo, rev, refs) if listed else ""
    if commit == AMBIGUOUS:
        raise predict.Ambiguous(f"model {rev[:60]!r}")
    if not commit:
        raise UserError(
            f"unknown model {rev[:60]!r}: allowed: a name GET /models lists, or a commit's id"
        )
    return commit


_loading = threading.Lock()


@functools.lru_cache(maxsize=CACHED_MODELS)
def _cached_load(rev: str, repo: str, stamp: object) -> predict.LoadedModel:
    """The few most recently used models, each under a `stamp` of what it was read from."""
    return predict.load(rev, repo, commit=rev)  # rev: WORKSPACE or its commit


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


def answer(repo: Path, rev: str, body: bytes) -> tuple[int, dict]:
    """(HTTP status, JSON) for one posted drawing and revision `rev`'s model."""
    try:
        model = model_at(rev, repo)
    except UserError as e:  # predict's words name its option; a client here gave ?model=
        return 404, {"error": re.sub(r"^--rev ", "model ", str(e))}
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
    png = images.png_bytes(prepared.image())
    return 200, {
        "empty": False,
        "model": rev,
        "digit": pred.digit,
        "digits": list(model.digits),
        "probabilities": [pred.probabilities[d] for d in model.digits],
        "image": "data:image/png;base64," + base64.b64encode(png).decode(),
        "spec": model.spec,
    }


def refusal(
    host: str, origin: str | None, site: str | None, listen: str, server: tuple[str, int]
) -> str | None:
    """Why a request is refused, if it is: a Host not this server's (a DNS-rebinding page under
    another name), an Origin not its own (a cross-site POST), or a browser's word (`site`,
    Sec-Fetch-Site) that another page sent it (a no-cors GET carries no Origin)."""
    addr, port = server
    names = {"127.0.0.1", "localhost", "[::1]"}
    names |= {f"[{a}]" if ":" in a else a for a in (listen, addr)}  # as a URL writes an IPv6 one
    if host not in {f"{n}:{port}" for n in names}:
        return f"Host {host!r} is not this server's; allowed: {sorted(names)} with port {port}"
    if origin is not None and origin != f"http://{host}":
        return f"Origin {origin!r} is another site's; only http://{host} may use this server"
    if site not in (None, "same-origin", "none"):
        return f"a request from another page (Sec-Fetch-Site: {site[:40]!r}); only this server's"
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
        no_frames = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
        return HTMLResponse(page_html, headers={"Cache-Control": "no-store", **no_frames})

    async def models(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(list_revisions, repo))

    async def guess(request: Request) -> Response:
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > MAX_BODY:  # refused before it is read, and not drained
            return JSONResponse(TOO_LARGE, 413, headers={"Connection": "close"})
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
        status, data = await run_in_threadpool(answer, repo, rev, bytes(body))
        return JSONResponse(data, status)

    async def no_favicon(request: Request) -> Response:  # no 404 in the browser's console
        return Response(status_code=204)

    async def guard(request: Request, call_next) -> Response:
        head = request.headers
        # a link to the page from elsewhere is a navigation, harmless (its connection closed
        # after: another site's frames of the page, which may not be framed, held the slots)
        page = request.method == "GET" and request.url.path == "/"
        site = head.get("sec-fetch-site")
        framed = page and head.get("sec-fetch-dest") in ("iframe", "frame", "embed", "object")
        allowed = None if page and not framed else site
        why = refusal(
            head.get("host", ""), head.get("origin"), allowed, host, request.scope["server"]
        )
        if why:  # and the connection closed: a foreign page's keep-alives hold no slot
            status = 421 if why.startswith("Host") else 403
            return JSONResponse({"error": why}, status, headers={"Connection": "close"})
        if page and site not in (None, "same-origin", "none"):
            response = await call_next(request)
            response.headers["Connection"] = "close"
            return response
        posting = request.method == "POST" and request.url.path == "/predict"
        has_body = head.get("content-length", "").lstrip("0") or "transfer-encoding" in head
        if has_body and not posting:
            # closed, not drained: uvicorn would read a body no route wants until the deadline
            why = "a request body is allowed only on POST /predict"
            return JSONResponse({"error": why}, 413, headers={"Connection": "close"})
        return await call_next(request)

    return Starlette(
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
        routes=[
            Route("/", page),
            Route("/models", models),
            Route("/predict", guess, methods=["POST"]),
            Route("/favicon.ico", no_favicon),
        ],
    )


def addresses(host: str) -> set[str]:
    """The addresses a --host names, as the OS reads it (`127.2` is 127.0.0.2); none if none."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return {str(ipaddress.ip_address(a[4][0].partition("%")[0])) for a in found}
    except (OSError, UnicodeError, ValueError):
        return set()


def _host(text: str) -> str:
    """argparse's type for --host: an empty one (an unset $HOST) would listen on every address,
    and one that names none is uvicorn's line without the value."""
    allowed = "allowed: 127.0.0.1 (this machine), 0.0.0.0 or :: (the network too), or a name"
    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty address listens on every one: {allowed}")
    if not addresses(text):
        raise argparse.ArgumentTypeError(f"{text!r} names no address here: {allowed}")
    return text


def _port(text: str) -> int:
    """argparse's type for --port: its own one-line error for anything not 0..65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: a number 0..65535")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="address to listen on (127.0.0.1: this machine only; 0.0.0.0 lets anyone on the "
        "network list the repo's branches, tags and experiments and run its models; :: is "
        "IPv6 only)",
    )
    add("--port", type=_port, default=8000, help="port (8000; 0: any free one)")
    add("--repo", type=Path, default=Path("."), help="the project (default: the current folder)")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise UserError(
            "the page needs the `app` extra: pip install -e '.[app]' (starlette, uvicorn)"
        ) from None
    import torch

    torch.set_num_threads(1)
    config = uvicorn.Config(
        create_app(args.repo, args.host),
        host=args.host,
        port=args.port,
        log_level="warning",
        limit_concurrency=64,
        http=headers_in_time(args.host),
        ws="none",  # an Upgrade is then a plain request, through the guard like any other
    )
    logging.getLogger("uvicorn.error").addFilter(AMinuteApart("Invalid HTTP request received."))
    server = uvicorn.Server(config)
    threading.Thread(target=announce, args=(server,), daemon=True).start()
    server.run()
    return 0


class AMinuteApart(logging.Filter):
    """A warning at most once a minute: any page can have serve log one per request (an invalid
    one: a URL of 300 kB), yet a browser's own can be one (another page's 160 kB of cookies)."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message, self.last = message, -60.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.message:
            return True
        if (now := time.monotonic()) - self.last < 60:
            return False
        self.last = now
        return True


def loopback_alias(local: str, listening: set[str]) -> bool:
    """A connection to a loopback address other than 127.0.0.1, ::1 and those listened on (one
    that 0.0.0.0 or :: takes): a browser keeps a pool of connections for each of 127.0.0.2 to
    127.255.255.254, so one page's preconnects held every slot."""
    ip = ipaddress.ip_address(local.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback and str(ip) not in {"127.0.0.1", "::1", *listening}


def unread_bytes(transport: asyncio.Transport) -> int:
    """How many bytes a client has sent that the event loop has not read yet."""
    waiting = array.array("i", [0])
    with contextlib.suppress(OSError):
        fcntl.ioctl(transport.get_extra_info("socket").fileno(), termios.FIONREAD, waiting)
    return waiting[0]


def headers_in_time(listen: str = "127.0.0.1") -> type:
    """uvicorn's HTTP protocol, closing a connection with no request in progress HEADER_SECONDS
    after it opened or was answered, and one whose client has read none of an answer for as
    long: uvicorn waits for headers, for the rest of a body it did not read, and for a client
    to read, for ever, so 64 trickling or never-reading clients held every slot."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    listening = addresses(listen)

    class HeadersInTime(H11Protocol):
        silent: ClassVar[
            dict[H11Protocol, None]
        ] = {}  # connections yet to send a byte, oldest first

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.deadline: asyncio.TimerHandle | None = None
            self.restart_deadline()
            if loopback_alias(transport.get_extra_info("sockname")[0], listening):
                transport.abort()
            self.silent[self] = None  # a browser's preconnect: any page can open hundreds
            while len(self.silent) > MAX_SILENT:  # (a pool for each name of *.localhost)
                oldest = next(iter(self.silent))
                del self.silent[oldest]
                if not unread_bytes(oldest.transport):  # sent before the loop read it: not silent
                    oldest.transport.abort()
                    break

        def data_received(self, data: bytes) -> None:
            self.silent.pop(self, None)
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.restart_deadline()

        def resume_writing(self) -> None:  # the client read some of an answer
            super().resume_writing()
            self.read_some = True

        def _unsupported_upgrade_warning(self) -> None:
            pass  # no upgrade is taken, on purpose: not uvicorn's advice to install a library

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            self.deadline.cancel()
            self.silent.pop(self, None)

        def restart_deadline(self) -> None:
            if self.deadline:
                self.deadline.cancel()
            self.read_some = False
            self.deadline = self.loop.call_later(HEADER_SECONDS, self.close_if_stalled)

        def close_if_stalled(self) -> None:
            unsent = self.transport.get_write_buffer_size()
            if unsent and not self.read_some:  # aborted: close() would wait to send it first
                self.transport.abort()
            # IDLE: no request's headers complete; DONE: answered, the body it did not need
            # still coming (uvicorn's keep-alive timer stops at its first byte)
            elif not unsent and self.conn.our_state in (h11.IDLE, h11.DONE):
                self.transport.close()
            elif unsent or not self.transport.is_closing():  # in progress, or an answer read
                self.restart_deadline()

    return HeadersInTime


def announce(server: "uvicorn.Server") -> None:
    """Once uvicorn listens, print its address with the port the OS gave (--port 0)."""
    while not server.started:
        time.sleep(0.05)
    for sock in (sock for s in server.servers for sock in s.sockets):
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
        print(f"serve: http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
