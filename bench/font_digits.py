"""How well do the ten-digit models read digits that are not MNIST's scans?

    python bench/font_digits.py MODEL.safetensors [MODEL ...] [--show DIR] [--json OUT]

Renders digits 0-9 from every TrueType font on the machine (`fc-list`: DejaVu, Liberation, ...)
at several sizes, stroke thicknesses and small rotations, dark on white and off-centre on a
larger page, brings each through mnist_basics.preprocess (exactly what `mnist-basics predict`
and the serve page do) and prints each model's accuracy on them. Deterministic: a seeded RNG.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnist_basics.models import load_model, predict  # noqa: E402
from mnist_basics.preprocess import to_mnist  # noqa: E402

SIZES = (40, 90)  # font size in pixels
STROKES = (0, 2)  # extra stroke width in pixels (thicker pen)
ROTATIONS = (-8, 8)  # degrees


def fonts() -> list[Path]:
    out = subprocess.run(["fc-list", ":", "file"], capture_output=True, text=True).stdout
    files = sorted({line.split(":")[0].strip() for line in out.splitlines()})
    # text fonts only: skip symbol and math fonts, whose digits are not the usual shapes
    return [Path(f) for f in files if f.endswith(".ttf") and "Math" not in f]


def render(font: Path, digit: int, size: int, stroke: int, angle: float, rng) -> Image.Image:
    f = ImageFont.truetype(str(font), size)
    glyph = Image.new("L", (size * 2, size * 2), 255)
    ImageDraw.Draw(glyph).text(
        (size // 2, size // 4), str(digit), font=f, fill=0, stroke_width=stroke, stroke_fill=0
    )
    glyph = glyph.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    page = Image.new("L", (size * 4, size * 3), 255)
    x, y = rng.integers(0, page.width - glyph.width), rng.integers(0, page.height - glyph.height)
    page.paste(glyph, (int(x), int(y)))
    return page


def dataset(show: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    rng = np.random.default_rng(0)
    xs, ys, names = [], [], []
    for font in fonts():
        for size in SIZES:
            for stroke in STROKES:
                for angle in ROTATIONS:
                    for d in range(10):
                        p = to_mnist(render(font, d, size, stroke, angle, rng))
                        xs.append(p.x)
                        ys.append(d)
                        names.append(f"{font.stem}-{size}-{stroke}-{angle}-{d}")
                        if show is not None:
                            show.mkdir(parents=True, exist_ok=True)
                            p.image().save(show / f"{names[-1]}.png")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys), names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--show", type=Path, help="write the preprocessed 28x28 images here")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    x, y, _ = dataset(args.show)
    n_fonts = len(fonts())
    print(
        f"{len(x)} font digits ({n_fonts} fonts x sizes {SIZES} x strokes {STROKES} x "
        f"rotations {ROTATIONS} x 10 digits)"
    )
    results = {}
    for path in args.models:
        model, spec = load_model(path)
        if list(spec.digits) != list(range(10)):
            print(f"{path}: not a ten-digit model, skipped")
            continue
        pred = predict(model, x).argmax(1)
        acc = (pred == y).float().mean().item()
        per = [round((pred[y == d] == d).float().mean().item(), 3) for d in range(10)]
        results[str(path)] = {"accuracy": acc, "per_digit": per, "model": spec.model}
        print(f"{path}: {spec.model}, accuracy {acc:.4f}; per digit {per}")
    if args.json:
        args.json.write_text(json.dumps({"n": len(x), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
