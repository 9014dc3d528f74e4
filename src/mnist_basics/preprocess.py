"""Any picture of a digit to MNIST's 28x28 form, made as MNIST was: fit to a 20x20 box keeping
its aspect ratio, centred by mass, light ink on black (docs/predict-and-serve.md has the steps).
An image already in that form is used as it is, so predicting the pipeline's PNGs is evaluate's.
"""

import contextlib
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_basics.atomic import read_capped
from mnist_basics.errors import BadFile, UserError
from mnist_basics.layout import png_chunks

SIDE = 28
BOX = 20  # MNIST's size-normalisation box
MAX_PIXELS = 40_000_000  # more than any sane photo of a digit; checked before decoding
# A camera's long side is 12,000 pixels or so. Beyond the pixel cap, a long side costs on its
# own: Pillow and libpng spend per row, and LANCZOS weighs each of the 20 pixels it shrinks a
# side to by a row of 6x (side / 20) taps (a 1x4,000,000 PNG of 7.8 KB: 350 MB and 0.9 s).
MAX_SIDE = 20_000
# of one file, read whole before it is checked: Pillow keeps a GIF's comment (in 1-byte blocks,
# 50 bytes of memory each) and a JPEG's metadata, and its WebP plugin reads the whole file
MAX_BYTES = 16 << 20
MAX_PNG_CHUNKS = 10_000  # libpng writes 8 KB each; Pillow reads each in Python, keeps private ones
MAX_JPEG_SEGMENTS = 1_000  # each read in Python (64 MB of empty APP1s: 33 s); a photo has ~50
# EXIF's Orientation tag, and the turn to upright, as ImageOps.exif_transpose has them; it also
# writes the whole EXIF again, one Python object a value (a 5 MB drawing's: 14 s of serve's CPU)
ORIENTATION = 0x0112
T = Image.Transpose
UPRIGHT = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
           6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}  # fmt: skip
# A marker in a JPEG's data: not a stuffed 0xFF (FF 00), a restart (FF D0-D7) or a fill byte
# (FF FF); one 0xFF, not `\xff+`, which backtracks: 100 KB of 0xFF took 48 s
JPEG_MARKER = re.compile(rb"\xff([^\x00\xd0-\xd7\xff])")
# The markers no length follows, as Pillow reads them (JPG, JPG0-13, start and end of image, TEM)
NO_LENGTH = {0x01, 0xC8, 0xD8, 0xD9, *range(0xF0, 0xFE)}
EXIF_APP1 = b"Exif\x00\x00"
MAX_EXIF = 1 << 16  # what a JPEG's APP1 holds; Pillow decodes a tag's values in Python
# What Pillow decodes by itself, under its names: not EPS (it runs Ghostscript on the file), nor
# TIFF (libtiff decodes tiles that all point at the same bytes, each at the cost of a whole one).
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP"}
# libjpeg decodes any number of scans, each a pass over every pixel; a real progressive JPEG
# has about ten (and a thumbnail's), a crafted one of 5 MB 350,000: 90 s of CPU.
MAX_JPEG_SCANS = 100
INK_THRESHOLD = 0.25  # of the stretched range: what counts as ink for the crop
MIN_CONTRAST = 24  # grey levels between background and ink below which the page is empty
NO_INK = "no ink found: a blank page (or too faint to read)"


class ImageError(UserError):
    """An input that is not a usable picture of a digit; the message says why."""


@dataclass(frozen=True)
class Prepared:
    """One input as the model sees it."""

    pixels: np.ndarray  # uint8 [28, 28], light ink on black
    as_is: bool  # already MNIST-like: used unchanged
    inverted: bool  # the background was light

    @property
    def x(self) -> np.ndarray:
        """The model's input row: float32 [784] in [0, 1], as the pipeline scales pixels."""
        return (self.pixels.astype(np.float32) / 255).reshape(SIDE * SIDE)

    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels, mode="L")


def prepare(
    source: Path | bytes,
    as_is: bool | None = None,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] = tuple(FORMATS),
) -> Prepared:
    """A file or its bytes in MNIST's form (`as_is`: see to_mnist), upright as its EXIF says. A
    non-regular file (a fifo would hang), a format not in `formats` or, from its header, an image
    too large or too costly to decode is refused; ImageError names no path: the caller names its
    input."""
    too_large = f"too large (more than {max_pixels:,} pixels)"
    *others, last = [FORMATS[f] for f in formats]
    allowed = f"{', '.join(others)} or {last}" if others else last
    data = source if isinstance(source, bytes) else file_bytes(source)
    f = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # corrupt EXIF: the pixels as stored
            structure = _structure(data, formats)
            _refuse_costly(structure)
            im = Image.open(f, formats=formats)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{w}x{h} pixels is {too_large}")
            if max(w, h) > MAX_SIDE:
                raise ImageError(
                    f"{w}x{h} pixels: a side of more than {MAX_SIDE:,} pixels: allowed: up to "
                    f"{MAX_SIDE:,} (a camera's long side is 12,000 or so)"
                )
            _refuse_animated(structure, im)
            im.load()
            # whatever a damaged EXIF raises (struct.error, among others), the pixels are good
            with contextlib.suppress(Exception):
                if turn := UPRIGHT.get(_tiff_orientation(structure.exif)):
                    im = im.transpose(turn)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{too_large}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a {allowed} image") from None
    except (OSError, EOFError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageError(f"cannot decode the image: {e}") from None
    except MemoryError:  # raised below, once Pillow's buffers in this frame are let go
        im = None
    if im is None:
        raise ImageError("not enough memory to decode it")
    if w == 0 or h == 0:
        raise ImageError("an empty image (0 pixels)")
    return to_mnist(im, as_is)


def file_bytes(path: Path) -> bytes:
    """A regular file's bytes, read once, so that the checks and the decoder see the same ones
    even while the file grows; refused past MAX_BYTES, or empty."""
    try:
        size, data = read_capped(path, MAX_BYTES)
    except BadFile as e:
        raise ImageError(e.why) from None
    except OSError as e:
        raise ImageError((e.strerror or type(e).__name__).lower()) from None
    if size > MAX_BYTES:
        raise ImageError(f"too large (more than {MAX_BYTES >> 20} MB; a photo is a few)")
    if not data:
        raise ImageError("an empty file")
    return data


class Structure(NamedTuple):
    """What the checks read from a file's bytes before Pillow does, once: a PNG's chunks (when
    PNG is asked for), a JPEG's segments (when JPEG is), and the EXIF a browser reads."""

    chunks: list[tuple[bytes, int, int]]
    jpeg: "JpegWalk | None"
    exif: bytes  # the TIFF data of a JPEG's first EXIF segment or a PNG's eXIf before IDAT


def _structure(data: bytes, formats: Sequence[str]) -> Structure:
    """A format not in `formats` is not read: Image.open refuses it unread. Browsers ignore a
    later eXIf, EXIF in text chunks or XMP, and WebP's, which Pillow's getexif reads too."""
    chunks = png_chunks(data) if "PNG" in formats else []
    is_jpeg = "JPEG" in formats and data.startswith(b"\xff\xd8\xff")  # a JPEG, or an MPO
    jpeg = jpeg_walk(data) if is_jpeg and not chunks else None
    exif = jpeg.exif if jpeg else b""
    for kind, start, end in chunks:
        if kind in (b"IDAT", b"eXIf"):
            exif = data[start + 8 : end - 4] if kind == b"eXIf" else b""
            break
    return Structure(chunks, jpeg, exif)


def _refuse_costly(structure: Structure) -> None:
    """Refuse, from its bytes alone, a file that Pillow would spend far more on than on its
    pixels: Pillow reads each PNG chunk and JPEG segment in Python and inflates every colour
    profile (up to 1 MB each; the PNG spec allows one), and libjpeg makes a pass over every
    pixel for each scan (a 5 MB JPEG of 350,000 took 90 s)."""
    if chunks := structure.chunks:
        if len(chunks) > MAX_PNG_CHUNKS:
            raise ImageError(f"a PNG of {len(chunks):,} chunks: allowed: up to {MAX_PNG_CHUNKS:,}")
        if (n := sum(kind == b"iCCP" for kind, *_ in chunks)) > 1:
            raise ImageError(f"a PNG of {n:,} colour profiles (iCCP chunks): allowed: one")
    elif structure.jpeg:
        scans, segments, _, exif_bytes = structure.jpeg
        if exif_bytes > MAX_EXIF:  # Pillow joins every EXIF segment, and reads the dpi from it
            raise ImageError(
                f"a JPEG of {exif_bytes:,} bytes of EXIF: allowed: up to {MAX_EXIF:,} (one "
                "segment's)"
            )
        if scans > MAX_JPEG_SCANS:
            raise ImageError(
                f"a JPEG of more than {MAX_JPEG_SCANS} scans: allowed: up to {MAX_JPEG_SCANS} (a "
                "photo has ten or so)"
            )
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageError(
                f"a JPEG of more than {MAX_JPEG_SEGMENTS:,} segments: allowed: up to "
                f"{MAX_JPEG_SEGMENTS:,} (a photo has about 50)"
            )


def _refuse_animated(structure: Structure, im: Image.Image) -> None:
    """An animation, or a GIF whose first frame leaves part of its screen bare: Pillow and a
    browser compose frames differently (an APNG's still under its first frame, a bare screen in
    palette colour 0 or transparent), so predict would read a picture the user does not see."""
    if any(kind == b"acTL" for kind, *_ in structure.chunks):  # one frame or many, as written
        raise ImageError("an APNG (a PNG with an acTL chunk): allowed: a PNG without one")
    if getattr(im, "is_animated", False) and im.format != "MPO":  # a camera's pictures, not frames
        raise ImageError(f"an animated {im.format} image: allowed: a still picture")
    if im.format == "GIF" and im.tile and im.tile[0].extents != (0, 0, *im.size):
        raise ImageError(
            f"a GIF whose first frame ({im.tile[0].extents}) does not fill its screen "
            f"({im.width}x{im.height}): allowed: a frame that fills it"
        )


def _tiff_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of EXIF's first IFD as a browser reads it: the first entry that is a
    SHORT of one value from 1 to 8 (Pillow takes a LONG, an SSHORT, the first of two values too),
    however large the EXIF (a PNG's eXIf may pass 64 KB)."""
    order = {b"MM\x00*": "big", b"II*\x00": "little"}.get(tiff[:4])
    if order is None:
        return None

    def number(at: int, size: int) -> int:
        return int.from_bytes(tiff[at : at + size], order)

    ifd = number(4, 4)
    for at in range(ifd + 2, min(ifd + 2 + 12 * number(ifd, 2), len(tiff) - 11), 12):
        entry = (number(at, 2), number(at + 2, 2), number(at + 4, 4), number(at + 8, 2))
        if entry[:3] == (ORIENTATION, 3, 1) and 1 <= entry[3] <= 8:
            return entry[3]
    return None


class JpegWalk(NamedTuple):
    scans: int
    segments: int  # all but the scans
    exif: bytes  # the first EXIF segment's TIFF data, the one a browser reads; b"" if none
    exif_bytes: int  # of all EXIF segments, which Pillow joins


def jpeg_walk(data: bytes) -> JpegWalk:
    """A JPEG's first image, walked by its segments' lengths to its end as libjpeg reads it (a
    phone's motion photo carries a video after it), and no further than one past either cap."""
    scans = segments = exif_bytes = 0
    exif = b""
    at = 2  # past the start-of-image marker
    while scans <= MAX_JPEG_SCANS and segments <= MAX_JPEG_SEGMENTS:
        if not (m := JPEG_MARKER.search(data, at)):
            break
        kind, at = m[1][0], m.end()
        if kind == 0xD9 and scans:  # end of image; Pillow reads on past one before any scan
            break
        scans += kind == 0xDA
        segments += kind != 0xDA  # a marker without a length too: Pillow reads each in Python
        if kind in NO_LENGTH:
            continue
        length = int.from_bytes(data[at : at + 2], "big")
        if kind == 0xE1 and not scans and data.startswith(b"Exif\x00", at + 2):
            exif = exif or data[at + 8 : at + length]  # a browser's, with any pad byte
            exif_bytes += (length - 2) * data.startswith(EXIF_APP1, at + 2)  # those Pillow joins
        at += length  # then entropy-coded data, a scan's
    return JpegWalk(scans, segments, exif, exif_bytes)


def greyscale(im: Image.Image) -> np.ndarray:
    """float32 [H, W] in 0-255. Transparency is laid on white, unless the visible pixels are
    light (light ink on a transparent page), then on black."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3] / 255
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
        visible = alpha > 0.5
        light_ink = visible.any() and not visible.all() and float(np.median(lum[visible])) > 127
        return lum * alpha + (0.0 if light_ink else 255.0) * (1 - alpha)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im.convert("F"), dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        return (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
    try:
        return np.asarray(im.convert("L"), dtype=np.float32)
    except ValueError as e:  # a mode Pillow cannot turn into grey
        raise ImageError(f"its colour mode {im.mode} cannot be read as grey ({e})") from None


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    total = float(a.sum())
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / total), float((xs * a).sum() / total)


def in_mnist_form(a: np.ndarray) -> bool:
    """28x28, light ink on black within a 20x20 box, centred by mass to a pixel, as MNIST's."""
    if a.shape != (SIDE, SIDE) or np.median(_border(a)) >= 128:
        return False
    ink = a > INK_THRESHOLD * 255
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not rows.size or rows[-1] - rows[0] >= BOX or cols[-1] - cols[0] >= BOX:
        return False
    cy, cx = centre_of_mass(a)
    return max(abs(cy - (SIDE - 1) / 2), abs(cx - (SIDE - 1) / 2)) <= 1


def to_mnist(im: Image.Image, as_is: bool | None = None) -> Prepared:
    """The image in MNIST's form, or ImageError when there is no ink. `as_is` True uses a 28x28
    image unchanged, False always preprocesses, None only when not in MNIST's form already."""
    a = greyscale(im)
    if as_is is None:  # 16-bit and float images were stretched by greyscale: not as they are
        as_is = in_mnist_form(a) and im.mode in ("L", "1", "P", "RGB", "RGBA", "LA")
    if as_is:
        if a.shape != (SIDE, SIDE):
            raise ImageError(f"{im.width}x{im.height} pixels: only a 28x28 image is used as it is")
        return Prepared(np.clip(np.rint(a), 0, 255).astype(np.uint8), as_is=True, inverted=False)
    background = float(np.median(_border(a))) if min(a.shape) > 2 else float(np.median(a))
    inverted = background >= 128
    if inverted:
        a, background = 255 - a, 255 - background
    ink_level = float(np.percentile(a, 99.9)) if a.size > 1000 else float(a.max())
    ink_level = max(ink_level, float(a.max()) * 0.5)
    if ink_level - background < MIN_CONTRAST:
        raise ImageError(NO_INK)
    # ink_level <= a.max(), so the brightest pixels stretch to 1: the mask is never empty
    a = np.clip((a - background) / (ink_level - background), 0, 1)
    mask = a > INK_THRESHOLD
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray((crop * 255).astype(np.float32), mode="F")
    s = np.clip(np.asarray(small.resize(size, Image.Resampling.LANCZOS)), 0, 255)
    if s.sum() == 0:
        raise ImageError(NO_INK)
    top, left = (int(np.rint((SIDE - 1) / 2 - c)) for c in centre_of_mass(s))
    field = Image.new("F", (SIDE, SIDE))
    field.paste(Image.fromarray(s, mode="F"), (left, top))  # clipped: a lopsided digit may not fit
    return Prepared(np.rint(np.asarray(field)).astype(np.uint8), as_is=False, inverted=inverted)
