"""Pictures worth looking at, drawn with Pillow: ideal digits, weight heat maps, a gallery."""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_basics import atomic


def png_bytes(img: Image.Image) -> bytes:
    """The image as a PNG, deterministically: no timestamps in PNG chunks."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_png(img: Image.Image, path: Path) -> None:
    atomic.write_bytes(path, png_bytes(img))


def grey(pixels: np.ndarray, scale: int = 4) -> Image.Image:
    """A [28, 28] array in [0, 1] as an upscaled greyscale image, ink dark as on paper."""
    arr = (255 - np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(arr, mode="L").resize((28 * scale, 28 * scale), Image.Resampling.NEAREST)


def heat(weights: np.ndarray, scale: int = 8) -> Image.Image:
    """A 2-D array as a heat map, each cell scale pixels wide: red +, blue -, white at 0."""
    m = float(np.abs(weights).max()) or 1.0
    v = np.clip(weights / m, -1, 1)[..., None]
    red, white, blue = np.array([178, 24, 43]), np.array([247, 247, 247]), np.array([33, 102, 172])
    rgb = np.where(v > 0, white + (red - white) * v, white + (blue - white) * -v)
    img = Image.fromarray(rgb.round().astype(np.uint8), mode="RGB")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def labelled_grid(tiles: list[Image.Image], captions: list[str], cols: int = 6) -> Image.Image:
    """Tiles in a grid, each with its caption above it."""
    font = ImageFont.load_default(size=12)
    w, h = tiles[0].size if tiles else (112, 112)
    cap = 16
    rows = max(1, -(-len(tiles) // cols))
    sheet = Image.new("RGB", (cols * (w + 8) + 8, rows * (h + cap + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, text) in enumerate(zip(tiles, captions, strict=True)):
        x, y = 8 + (i % cols) * (w + 8), 8 + (i // cols) * (h + cap + 8)
        draw.text((x, y), text, fill="black", font=font)
        sheet.paste(tile.convert("RGB"), (x, y + cap))
    return sheet
