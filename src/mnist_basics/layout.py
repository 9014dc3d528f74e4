"""fast.ai's layout, `<split>/<digit>/<index>.png` (`train/3/10.png`: MNIST training image #10,
`valid/`: the test set), read from a folder, a .tgz or data/raw.zip with every fault named."""

import io
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mnist_basics.errors import UserError, printable

SPLITS = ("train", "valid")
SPLIT_NAMES = {"train": "train", "training": "train", "valid": "valid", "testing": "valid"}
MAX_LISTED = 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXELS = (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND")  # a PNG's chunks that make its pixels
MAX_CHUNKS = 100  # of a 28x28 PNG, which has a few
MAX_IDATS = 8  # its pixel data's, each of which Pillow reads in Python: a 28x28 PNG's fit in one

Entry = tuple[str, Callable[[], bytes]]  # (name in the archive or folder, reads its bytes)


@dataclass(frozen=True)
class Split:
    """One split as arrays: images uint8 [N, 28, 28], labels (the digits) and MNIST indices."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


def dataset_name(digits: Iterable[int]) -> str:
    """fast.ai's name for the 3s and 7s, else `mnist_` and the sorted digits."""
    ds = sorted(set(digits))
    return "mnist_sample" if ds == [3, 7] else "mnist_" + "".join(map(str, ds))


def parse(parts: list[str]) -> tuple[str, int, int] | str:
    """(split, digit, index) of `[<split>, <digit>, <index>.png]` (ASCII digits), or why not."""
    split = SPLIT_NAMES.get(parts[0])
    if split is None:
        return "ignored"  # beside the splits (a labels.csv), as in fast.ai's own tree
    if len(parts) < 3:
        return "a stray file (only digit folders belong here)"
    if not re.fullmatch("[0-9]", parts[1]):
        return "not a digit folder (0-9)"
    if len(parts) > 3 or not re.fullmatch(r"(0|[1-9][0-9]{0,17})\.png", parts[2]):
        return "not an <index>.png file (an index of at most 18 digits)"
    return split, int(parts[1]), int(parts[2][:-4])


def path_parts(name: str) -> list[str]:
    """A member's name as its folders and file, read as tar and a file system read it: an empty
    or `.` part is no folder (`./mnist_sample//train` is `mnist_sample/train`)."""
    return [p for p in name.split("/") if p not in ("", ".")]


def _root_depth(names: list[list[str]]) -> int:
    """Where the splits are: in the tree itself (0) or in its one sub-folder (1, mnist_sample/)."""
    for depth in (0, 1):
        under = [p for p in names if len(p) > depth]
        one_top = len({p[0] for p in under}) == 1
        if any(p[depth] in SPLIT_NAMES for p in under) and (depth == 0 or one_top):
            return depth
    raise UserError(
        "not in fast.ai's layout (train/<digit>/<index>.png and valid/...), nor the four IDX "
        ".gz files"
    )


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """A PNG's chunks, before its pixels and after them, as (type, start, end) from their
    headers alone; none if `data` is no PNG."""
    chunks, at = [], len(PNG_SIGNATURE)
    if data.startswith(PNG_SIGNATURE):
        while at + 8 <= len(data):
            end = at + 12 + int.from_bytes(data[at : at + 4], "big")  # length, type, data, CRC
            chunks.append((data[at + 4 : at + 8], at, end))
            at = len(data) if chunks[-1][0] == b"IEND" else end  # what follows is no PNG's
    return chunks


# Adam7's seven passes: (first column, first row, column step, row step)
ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def pixel_bytes(depth: int, interlaced: bool) -> int:
    """What a 28x28 greyscale PNG's pixel data inflates to: each row its filter byte and its
    samples of `depth` bits (interlaced: the rows of Adam7's seven smaller images)."""
    total = 0
    for x, y, dx, dy in ADAM7 if interlaced else ((0, 0, 1, 1),):
        cols, rows = -(-(28 - x) // dx), -(-(28 - y) // dy)
        total += rows * (1 + -(-cols * depth // 8))
    return total


def short_rows(data: bytes, chunks: list[tuple[bytes, int, int]]) -> str:
    """Why a 28x28 greyscale PNG's complete pixel data holds fewer rows than its height, if it
    does: Pillow reads the missing rows as 0, MNIST's background (a damaged digit, unsaid)."""
    start = next(a for kind, a, _ in chunks if kind == b"IHDR") + 8  # the one Pillow read
    depth, interlaced = data[start + 8], data[start + 12] == 1
    pixels = b"".join(data[a + 8 : b - 4] for kind, a, b in chunks if kind == b"IDAT")
    need = pixel_bytes(depth, interlaced)
    got = len(zlib.decompressobj().decompress(pixels, need))
    return f"its pixel data ends early ({got} of {need} bytes)" if got < need else ""


def decode_png(data: bytes) -> np.ndarray | str:
    """The book's `Image.open`: a 28x28 greyscale PNG as uint8 [28, 28], or what is wrong. Read
    from the chunks its pixels need: Pillow inflates every colour profile (up to 1 MB each, from
    a few bytes of an archive) and compressed text as it opens a file, and the grey levels are
    used as stored."""
    if len(chunks := png_chunks(data)) > MAX_CHUNKS:
        return f"a PNG of {len(chunks):,} chunks: allowed: up to {MAX_CHUNKS} (28x28 has a few)"
    kinds = [kind for kind, _, _ in chunks]
    if (idats := kinds.count(b"IDAT")) > MAX_IDATS:
        return f"its pixel data in {idats} IDAT chunks: allowed: up to {MAX_IDATS} (28x28 needs 1)"
    if kinds.count(b"IHDR") > 1:  # libpng's rule too
        return "a PNG of more than one IHDR chunk (its header): allowed: one"
    kept = data
    if chunks:
        kept = PNG_SIGNATURE + b"".join(data[a:b] for kind, a, b in chunks if kind in PIXELS)
    try:
        with Image.open(io.BytesIO(kept)) as im:
            if im.format != "PNG" or im.size != (28, 28) or im.mode != "L":
                return f"{im.format} {im.size[0]}x{im.size[1]} mode {im.mode}, not 28x28 mode L"
            return short_rows(data, chunks) or np.asarray(im)
    except Exception as e:  # any decoder failure is the file's fault
        return f"does not decode as PNG ({type(e).__name__})"


def read_tree(
    entries: Iterable[Entry], where: str, digits: Iterable[int] | None = None
) -> dict[str, Split]:
    """Every PNG of the tree (or only those of `digits`) as one Split per split, by digit then
    index; every fault named at once, up to MAX_LISTED, as a user's own tree has no checksum."""
    items = [(path_parts(name), read) for name, read in entries]
    depth = _root_depth([p for p, _ in items])
    wanted = set(digits) if digits is not None else None
    found: dict[str, dict[tuple[int, int], np.ndarray]] = {s: {} for s in SPLITS}
    seen: dict[str, set[int]] = {s: set() for s in SPLITS}
    called: dict[str, set[str]] = {s: set() for s in SPLITS}  # valid/ or testing/, not both
    twice: set[str] = set()
    problems: dict[str, None] = {}  # in order, each said once: a bad folder, not its every file
    for parts, read in items:
        got = parse(parts[depth:]) if len(parts) > depth else "ignored"
        if isinstance(got, str):
            if got != "ignored":
                named = parts[: depth + 2] if got.startswith("not a digit") else parts
                problems[f"{printable('/'.join(named))}: {got}"] = None
            continue
        split, digit, index = got
        seen[split].add(digit)
        called[split].add(parts[depth])
        if wanted is not None and digit not in wanted:
            continue
        try:
            pixels = decode_png(read())
        except Exception as e:  # a bad CRC, a cut member: the file's fault, named as such
            pixels = f"cannot be read ({e})"
        if isinstance(pixels, str):
            problems[f"{printable('/'.join(parts))}: {pixels}"] = None
        elif found[split].setdefault((digit, index), pixels) is not pixels:
            twice.add(split)
    need = wanted if wanted is not None else seen["train"] | seen["valid"]
    listed = []  # said first: one missing digit is worth more than twenty stray files
    for split in SPLITS:
        gone = [f"{split}/{d}: no images" for d in sorted(need - seen[split])]
        listed += gone if seen[split] else [f"{split}: missing (no images)"]
        listed += [f"{split}: the same <digit>/<index>.png twice"] if split in twice else []
        if len(called[split]) > 1:
            both = " and ".join(f"{n}/" for n in sorted(called[split], key=len))
            listed += [f"{both} both name the {split} split: allowed: one of them"]
    if listed := listed + list(problems):
        more = [f"... and {len(listed) - MAX_LISTED} more"] if len(listed) > MAX_LISTED else []
        head = f"{where}: {len(listed)} problem(s) in fast.ai's layout:"
        raise UserError("\n  ".join([head, *listed[:MAX_LISTED], *more]))
    out = {}
    for s in SPLITS:
        keys = sorted(found[s])  # canonical order: digit, then MNIST index
        labels, indices = np.array(keys, np.int64).reshape(-1, 2).T.copy()
        images = np.array([found[s][k] for k in keys], np.uint8).reshape(-1, 28, 28)
        out[s] = Split(images, labels, indices)
    return out
