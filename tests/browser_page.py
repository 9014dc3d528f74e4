"""Drive a page served on this machine (http://127.0.0.1:PORT) in headless Chromium, offline.

Built on tests/browser.py's DevTools pipe: `Page(url)` opens the URL with every host name
unresolvable and https/ws blocked, so nothing can leave the machine, and records every request.
A test can evaluate JavaScript, wait for a condition, move the real mouse (CDP
Input.dispatchMouseEvent, which the page sees as pointer events) and take a screenshot.
`page.result()` is a browser.Result whose `external_requests` lists anything requested from
outside the page's own origin (file:, data:, blob: and about: are local).
"""

from __future__ import annotations

import base64
import itertools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from browser import CHROMIUM, FLAGS, BrowserError, Result, _collect, _Pipe, available

# The page's own origin must connect; every other name still fails to resolve.
_FLAGS = tuple(
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"
    if f.startswith("--host-resolver-rules")
    else f
    for f in FLAGS
)


class Page:
    """One tab showing `url` (http://127.0.0.1:PORT/...); use as a context manager."""

    def __init__(self, url: str, width: int = 1000, height: int = 700, timeout: float = 30):
        if not available():
            raise BrowserError(f"{CHROMIUM} not found")
        self.url = url
        self.origin = "/".join(url.split("/", 3)[:3]) + "/"
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self.cdp = _Pipe(
            [str(CHROMIUM), *_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            self.profile.parent / f"{self.profile.name}.log",
        )
        try:
            target = self.cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.cdp.send(
                "Target.attachToTarget", {"targetId": target, "flatten": True}
            )["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
            self.send(
                "Network.setBlockedURLs",
                {"urls": ["https://*", "ws://*", "wss://*", "ftp://*"]},
            )
            self.cdp.events.clear()
            self.send("Page.navigate", {"url": url})
            deadline = time.monotonic() + timeout
            while not any(e["method"] == "Page.loadEventFired" for e in self.cdp.events):
                if time.monotonic() > deadline:
                    raise BrowserError(f"{url} did not load in {timeout}s")
                self.cdp.poll(0.1)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, params: dict | None = None, timeout: float = 10) -> dict:
        return self.cdp.send(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20, interval: float = 0.1) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"not true within {timeout}s: {expression}")
            self.cdp.poll(interval)

    def box(self, selector: str) -> dict:
        """The element's bounding box in CSS pixels: x, y, width, height."""
        js = (
            f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
            " return {x: r.left, y: r.top, width: r.width, height: r.height}; })()"
        )
        return self.evaluate(js)

    def mouse(self, kind: str, x: float, y: float, buttons: int = 0) -> None:
        """One real mouse event: kind is mousePressed, mouseMoved or mouseReleased."""
        params: dict[str, Any] = {"type": kind, "x": x, "y": y, "buttons": buttons}
        if kind != "mouseMoved":
            params.update(button="left", clickCount=1)
        elif buttons:
            params["button"] = "left"
        self.send("Input.dispatchMouseEvent", params)

    def drag(self, points: list[tuple[float, float]], steps: int = 8, pause: float = 0.01) -> None:
        """Press at the first point, move through the others (`steps` moves per segment),
        release at the last: one stroke, as a person draws it."""
        self.mouse("mouseMoved", *points[0])
        self.mouse("mousePressed", *points[0], buttons=1)
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            for k in range(1, steps + 1):
                t = k / steps
                self.mouse("mouseMoved", x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, buttons=1)
                if pause:
                    time.sleep(pause)
        self.mouse("mouseReleased", *points[-1])

    def click(self, selector: str) -> None:
        b = self.box(selector)
        x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, buttons=1)
        self.mouse("mouseReleased", x, y)

    def screenshot(self, path: Path) -> None:
        shot = self.send("Page.captureScreenshot", {"format": "png"}, timeout=30)
        Path(path).write_bytes(base64.b64decode(shot["data"]))

    def result(self) -> Result:
        """Console errors, exceptions, failed and external requests so far."""
        self.cdp.poll(0.2)
        r = Result()
        _collect(self.cdp.events, r)
        r.external_requests = [u for u in r.external_requests if not u.startswith(self.origin)]
        return r

    def close(self) -> None:
        self.cdp.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        (self.profile.parent / f"{self.profile.name}.log").unlink(missing_ok=True)
