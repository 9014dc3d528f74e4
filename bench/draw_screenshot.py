"""docs/draw.png: the serve page in headless Chromium after drawing a 7 with real mouse events.

    python bench/draw_screenshot.py MODEL [--compare OTHER] [--out docs/draw.png]

Serves a temporary folder holding MODEL as its workspace model (and OTHER, when given, as a
second revision: a git + DVC repo with OTHER at tag `other`), draws the 7 of tests/test_app.py,
waits for the guess and saves the screenshot. Prints what the page showed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from test_app import SEVEN, Server, shown  # noqa: E402
from use_models import DVC, run  # noqa: E402


def repo_with(model: Path, other: Path | None, root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "models").mkdir()
    if other is None:
        shutil.copyfile(model, root / "models" / "model.safetensors")
        return root
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "config", "user.name", "bench")
    run(root, "git", "config", "user.email", "bench@example.invalid")
    run(root, DVC, "init", "-q")
    shutil.copyfile(other, root / "models" / "model.safetensors")
    run(root, DVC, "add", "-q", "models/model.safetensors")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "other")
    run(root, "git", "tag", "other")
    (root / "models" / "model.safetensors").unlink()
    shutil.copyfile(model, root / "models" / "model.safetensors")
    return root


def main() -> int:
    from browser_page import Page

    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "draw.png")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = repo_with(
            args.model.resolve(), args.compare and args.compare.resolve(), Path(tmp) / "repo"
        )
        server = Server(repo)
        try:
            with Page(server.url, width=1300, height=500) as page:
                page.wait_for("document.getElementById('model-0').options.length > 0")
                if args.compare:
                    page.evaluate(
                        "(() => { const s = document.getElementById('model-1');"
                        " s.value = 'other'; s.dispatchEvent(new Event('change')); })()"
                    )
                pad = page.box("#pad")
                page.drag(
                    [
                        (pad["x"] + x * pad["width"] / 280, pad["y"] + y * pad["height"] / 280)
                        for x, y in SEVEN
                    ]
                )
                page.wait_for(
                    "window.predictions[0] && window.predictions[0].digit !== undefined"
                    " && document.getElementById('seen-0').naturalWidth === 28"
                )
                if args.compare:
                    page.wait_for(
                        "window.predictions[1] && window.predictions[1].digit !== undefined"
                    )
                page.wait_for("window.idle()")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(args.out)
                for i in (0, 1) if args.compare else (0,):
                    s = shown(page, i)
                    print(f"panel {i}: digit {s['digit']}, bars {s['bars']}")
                r = page.result()
                print("external requests:", r.external_requests, "errors:", r.errors)
        finally:
            server.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
