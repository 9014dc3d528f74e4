"""The download stage's work with our PNG writer or with Pillow's, for a paired timing.

    python bench/png_writer.py ours|pillow|pillow0 [--all-digits] [--mnist ../shared/data/mnist]

Builds data/raw.zip from the four IDX files into a temporary folder, exactly as `dvc repro`'s
download stage does from a local IDX folder, with each PNG written by rawzip.encode_png (ours),
Pillow's default `save` (pillow) or Pillow at zlib level 0 (pillow0: stored, as ours). Time the
variants against each other as whole processes (`/usr/bin/time`, or any paired A/B runner).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from PIL import Image

from mnist_basics import rawzip
from mnist_basics.download import download


def pillow_png(level: int | None):
    def encode(image) -> bytes:
        buf = io.BytesIO()
        kwargs = {} if level is None else {"compress_level": level}
        Image.fromarray(image, mode="L").save(buf, format="PNG", **kwargs)
        return buf.getvalue()

    return encode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("writer", choices=("ours", "pillow", "pillow0"))
    ap.add_argument("--all-digits", action="store_true")
    ap.add_argument("--mnist", type=Path, default=Path(__file__).parents[2] / "shared/data/mnist")
    args = ap.parse_args()
    if args.writer != "ours":
        rawzip.encode_png = pillow_png(None if args.writer == "pillow" else 0)
    digits = list(range(10)) if args.all_digits else [3, 7]
    with tempfile.TemporaryDirectory() as d:
        download(digits, [str(args.mnist.resolve())], 10, Path(d) / "raw.zip")


if __name__ == "__main__":
    main()
