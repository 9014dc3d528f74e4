"""HTTP(S) and file:// downloads with urllib, capped in size and time: our machines reach no
internet but the package index, so a stalled or dripping source must fail in seconds."""

import hashlib
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from mnist_basics.errors import UserError

MIN_PROGRESS = 1 << 10  # bytes per `timeout` seconds: a byte a second is no progress
WHOLE = 60  # `timeout`s a source may take in all (10 min by default), however its files drip


def scheme(url: str) -> str:
    """The lower-cased scheme of `url` ('' for a plain path)."""
    return urlsplit(url).scheme.lower() if "://" in url else ""


def check_scheme(url: str, allowed: tuple[str, ...] = ("http", "https", "file")) -> None:
    """Follow only http, https and file URLs: never ftp, data: or anything a handler might add."""
    if scheme(url) not in allowed:
        names = ", ".join(allowed[:-1]) + " and " + allowed[-1]
        raise UserError(f"{url}: only {names} URLs are followed")


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to http or https (urllib would also follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        check_scheme(newurl, ("http", "https"))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class FetchError(UserError):
    """A download that failed; `unreachable` when the host itself is down, not just one file."""

    def __init__(self, url: str, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason
        self.unreachable = unreachable


def describe(exc: BaseException) -> str:
    """One short line for why a download or a source failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out (no data within the timeout)"
    if isinstance(exc, ConnectionError):
        return f"connection failed ({exc.strerror or type(exc).__name__})"
    return str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"


def _transfer(url: str, out: BinaryIO, timeout: float, max_bytes: int, got: list[int]) -> None:
    """The download itself: headers, then the body into `out`, its bytes counted in got[0]."""
    with urllib.request.build_opener(_SafeRedirect).open(url, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise UserError(f"{total} bytes, more than the {max_bytes} expected")
        while chunk := resp.read1(1 << 20):  # what has arrived, so the count moves with it
            got[0] += len(chunk)
            if got[0] > max_bytes:
                raise UserError(f"larger than the {max_bytes} bytes expected")
            out.write(chunk)
    if total is not None and got[0] != total:
        raise UserError(f"truncated, got {got[0]} of {total} bytes")


def deadline(timeout: float) -> float:
    """When a source that starts now must be done: WHOLE timeouts, for all of its files."""
    return time.monotonic() + WHOLE * timeout


def _watched(work: Callable[[], None], got: list[int], timeout: float, until: float) -> None:
    """Run `work` in a daemon thread, given up on when a `timeout` (the first: two, for connect
    and headers) brings under MIN_PROGRESS bytes, as a trickle would, or at `until`."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:  # raised again in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True, name="fetch")
    thread.start()
    seen, since, window = 0, time.monotonic(), 2 * timeout
    thread.join(0.1)
    while thread.is_alive():
        now = time.monotonic()
        if got[0] - seen >= MIN_PROGRESS:
            seen, since, window = got[0], now, timeout
        elif now - since >= window:
            raise UserError(f"too slow: {got[0] - seen} bytes in {window:g} s")
        if now >= until:
            raise UserError(
                f"too slow: {got[0]:,} bytes when the {WHOLE * timeout:g} s a source may take "
                f"in all ({WHOLE} x data.timeout) were up"
            )
        thread.join(0.1)
    if errors:
        raise errors[0]


def fetch(url: str, dest: Path, *, timeout: float, max_bytes: int, until: float) -> None:
    """Download `url` to `dest` by `until` (the source's deadline); a FetchError if it fails."""
    check_scheme(url)
    got = [0]
    try:
        with dest.open("wb") as out:
            _watched(lambda: _transfer(url, out, timeout, max_bytes, got), got, timeout, until)
    except (UserError, OSError, http.client.HTTPException) as e:
        host_failed = isinstance(e, urllib.error.URLError | TimeoutError | ConnectionError)
        down = host_failed and not isinstance(e, urllib.error.HTTPError)  # a 404 is one file
        raise FetchError(url, describe(e), unreachable=down) from e


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks (archives are too big to hold twice)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()
