"""Open a local HTML file in real headless Chromium, offline, and say what a person would see.

`render(path)` starts /usr/bin/chromium with the DevTools protocol on a pipe
(`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3 and 4, so no websocket and no
port), loads the file, and returns:

- console errors, uncaught exceptions and failed requests;
- every request to something other than file:, data:, blob: or about: (all of them fail:
  the host resolver maps every name to NOTFOUND and there is no proxy), so an empty
  `external_requests` proves the page rendered without the network;
- for each plot div (a direct child `<div id=...>` of `<body>`, as dvc-render writes them),
  how many charts vega drew in it (`svg.marks` / `canvas.marks`);
- every `<img>`, and whether it loaded (`naturalWidth > 0`).

Only the standard library is used.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--no-proxy-server",
    # Every host name fails to resolve: nothing but file:// and data: can load.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--window-size=1200,2000",
    "--remote-debugging-pipe",
)

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")

# What the page shows: one entry per plot div, and every image.
_PROBE = r"""
(() => {
  const plots = [...document.querySelectorAll('body > div[id]')].map(d => ({
    id: d.id,
    vega: d.classList.contains('vega-embed')
      || [...d.querySelectorAll('script')].some(s => s.textContent.includes('vegaEmbed')),
    charts: d.querySelectorAll('svg.marks, canvas.marks').length,
    images: d.querySelectorAll('img').length,
  }));
  const images = [...document.images].map(i => ({
    src: i.getAttribute('src').slice(0, 200),
    complete: i.complete,
    natural_width: i.naturalWidth,
  }));
  return {ready: document.readyState, plots, images};
})()
"""


@dataclass
class Plot:
    id: str
    vega: bool  # a vega-lite plot (its div calls vegaEmbed), else an image plot
    charts: int  # svg.marks / canvas.marks drawn inside the div
    images: int


@dataclass
class Image:
    src: str
    complete: bool
    natural_width: int

    @property
    def loaded(self) -> bool:
        return self.complete and self.natural_width > 0


@dataclass
class Result:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[str]:
        """Everything that went wrong, one line each."""
        return (
            [f"console: {m}" for m in self.console_errors]
            + [f"exception: {m}" for m in self.exceptions]
            + [f"request failed: {m}" for m in self.failed_requests]
        )

    @property
    def vega_plots(self) -> list[Plot]:
        return [p for p in self.plots if p.vega]

    @property
    def charts(self) -> int:
        return sum(p.charts for p in self.plots)

    def summary(self) -> str:
        lines = [
            f"rendered in {self.seconds:.1f}s: {self.charts} charts in "
            f"{len(self.vega_plots)} vega plots, {len(self.images)} images "
            f"({sum(i.loaded for i in self.images)} loaded)"
        ]
        lines += [f"  {e}" for e in self.errors]
        lines += [f"  external request: {u}" for u in self.external_requests]
        lines += [
            f"  plot {p.id!r}: vega={p.vega} charts={p.charts} images={p.images}"
            for p in self.plots
        ]
        return "\n".join(lines)


class BrowserError(RuntimeError):
    pass


def available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


def _high_fd(fd: int) -> int:
    """A close-on-exec copy of `fd` numbered 10 or more, so dup2 onto 3 and 4 cannot clash."""
    hi = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return hi


class _Pipe:
    """Chromium's DevTools protocol over --remote-debugging-pipe."""

    def __init__(self, args: list[str], stderr_path: Path) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        child_r, child_w = _high_fd(to_browser_r), _high_fd(from_browser_w)

        def fds() -> None:  # in the child: its fd 3 reads commands, fd 4 writes replies
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self._stderr = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            preexec_fn=fds,
            close_fds=False,
            start_new_session=True,
        )
        os.close(child_r)
        os.close(child_w)
        self._w = to_browser_w
        self._r = from_browser_r
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 10,
    ) -> dict:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for m in self.poll(deadline - time.monotonic()):
                if m.get("id") == self._next_id:
                    if "error" in m:
                        raise BrowserError(f"{method}: {m['error']}")
                    return m.get("result", {})
            if time.monotonic() >= deadline:
                raise BrowserError(f"{method}: no answer in {timeout}s")

    def poll(self, timeout: float) -> list[dict]:
        """Messages read within `timeout` seconds; events are also kept in self.events."""
        ready, _, _ = select.select([self._r], [], [], max(timeout, 0))
        if not ready:
            return []
        chunk = os.read(self._r, 1 << 20)
        if not chunk:
            raise BrowserError(f"chromium closed the pipe (exit {self.proc.poll()})")
        self._buf += chunk
        *msgs, self._buf = self._buf.split(b"\0")
        out = [json.loads(m) for m in msgs if m]
        self.events += [m for m in out if "method" in m]
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=5)
        for fd in (self._w, self._r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stderr.close()


def _text(args: list[dict]) -> str:
    return " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in args)


def _collect(events: list[dict], result: Result) -> None:
    urls: dict[str, str] = {}
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = _text(p.get("args", []))
            if p.get("type") in ("error", "assert"):
                result.console_errors.append(text)
            elif p.get("type") == "warning":
                result.warnings.append(text)
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            result.exceptions.append(
                d.get("exception", {}).get("description") or d.get("text", "?")
            )
        elif method == "Log.entryAdded":
            entry = p["entry"]
            if entry.get("level") == "error":
                result.console_errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            urls[p["requestId"]] = url
            if not url.startswith(LOCAL_SCHEMES):
                result.external_requests.append(url)
        elif method == "Network.loadingFailed":
            url = urls.get(p["requestId"], "?")
            why = p.get("blockedReason") or p.get("errorText") or "failed"
            result.failed_requests.append(f"{url[:200]} ({why})")


def render(
    html_path: Path, timeout: float = 30, settle: float = 1.5, screenshot: Path | None = None
) -> Result:
    """Load `html_path` offline in headless Chromium and report what rendered.

    Returns once every vega plot div holds a chart and every image has finished (loaded or
    not), or once nothing has changed for `settle` seconds after the load event, or at
    `timeout`. With `screenshot`, also saves a full-page PNG there.
    """
    if not available():
        raise BrowserError(f"{CHROMIUM} not found")
    url = Path(html_path).resolve().as_uri()
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    start = time.monotonic()
    deadline = start + timeout
    cdp = _Pipe(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        profile.parent / f"{profile.name}.log",
    )
    result = Result()
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Network", "Page"):
            cdp.send(f"{domain}.enable", session=session)
        # Belt and braces with --host-resolver-rules: refuse anything that is not local.
        cdp.send(
            "Network.setBlockedURLs",
            {"urls": ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]},
            session=session,
        )
        cdp.events.clear()
        cdp.send("Page.navigate", {"url": url}, session=session)

        loaded_at: float | None = None
        last_state, last_change = None, time.monotonic()
        state: dict = {}
        while time.monotonic() < deadline:
            cdp.poll(0.1)
            if loaded_at is None and any(e["method"] == "Page.loadEventFired" for e in cdp.events):
                loaded_at = time.monotonic()
            if loaded_at is None:
                continue
            state = cdp.send(
                "Runtime.evaluate", {"expression": _PROBE, "returnByValue": True}, session=session
            )["result"]["value"]
            now = time.monotonic()
            if state != last_state:
                last_state, last_change = state, now
            done = (
                state["ready"] == "complete"
                and all(p["charts"] > 0 for p in state["plots"] if p["vega"])
                and all(i["complete"] for i in state["images"])
            )
            if done or now - last_change >= settle:
                break
        else:
            if loaded_at is None:
                raise BrowserError(f"{url} did not finish loading in {timeout}s")
        cdp.poll(0.2)  # late console messages
        if screenshot is not None:
            shot = cdp.send(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session=session,
                timeout=30,
            )
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        _collect(cdp.events, result)
        result.plots = [Plot(**p) for p in state.get("plots", [])]
        result.images = [Image(**i) for i in state.get("images", [])]
        result.seconds = time.monotonic() - start
        return result
    finally:
        cdp.close()
        shutil.rmtree(profile, ignore_errors=True)
        (profile.parent / f"{profile.name}.log").unlink(missing_ok=True)


if __name__ == "__main__":  # python tests/browser.py report.html [shot.png]
    import sys

    r = render(Path(sys.argv[1]), screenshot=Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(r.summary())
    sys.exit(1 if r.errors or r.external_requests else 0)
