"""The book's "tensorize and stack": each split's PNGs as one uint8 array, in canonical order.

The PNGs are the members of data/raw.zip (see rawzip), read straight from the archive. Plain
NumPy and Pillow (no torch import: it costs more than the work). PNGs are decoded by a pool of
processes, one per core, in large chunks; the arrays are written as safetensors, never pickle.
"""

from __future__ import annotations

import io
import logging
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from mnist_basics import atomic, rawzip
from mnist_basics.errors import UserError
from mnist_basics.parallel import chunked, run_chunks

log = logging.getLogger("mnist_basics")

SPLITS = rawzip.SPLITS
CHUNK = 2500  # images per task of the worker pool
MAX_LISTED = 20  # problems named in one error, so a broken folder doesn't flood the terminal


DIGITS = "0123456789"
# What reading one member can raise: a bad CRC, a truncated or foreign compression, a bad header.
READ_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error)


class _Listing:
    """Members sorted into fast.ai's layout as they are met; each fault named once."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[int, int, str]]] = {s: [] for s in SPLITS}
        self.folders: dict[str, set[int]] = {s: set() for s in SPLITS}
        self.problems: list[str] = []
        self.said: set[str] = set()
        self.seen: set[str] = set()

    def fault(self, rel: str, why: str) -> None:
        if rel not in self.said:  # a bad folder is named once, however many files it holds
            self.said.add(rel)
            self.problems.append(f"{rel}: {why}")

    def add(self, name: str) -> None:
        """One member `<dataset>/<split>/<digit>/<index>.png` (or a folder on the way)."""
        parts, is_dir = name.rstrip("/").split("/"), name.endswith("/")
        if len(parts) == 1:
            if not is_dir:
                self.fault(name, "not in the dataset folder")
            return
        split = parts[1]
        if split not in SPLITS or len(parts) == 2:
            return  # beside the splits (a labels.csv): ignored, as in fast.ai's own tree
        folder = "/".join(parts[:3])
        if not (len(parts[2]) == 1 and parts[2] in DIGITS) or (len(parts) == 3 and not is_dir):
            self.fault(folder, "not a digit folder (expected 0-9)")
            return
        digit = int(parts[2])
        self.folders[split].add(digit)
        if len(parts) == 3:
            return
        stem, _, ext = parts[3].rpartition(".")
        if len(parts) > 4 or is_dir or not (ext == "png" and stem.isascii() and stem.isdecimal()):
            self.fault("/".join(parts[:4]), "not an <index>.png file")
        elif name in self.seen:
            self.fault(name, "in the zip twice")
        else:
            self.seen.add(name)
            self.entries[split].append((digit, int(stem), name))


def list_members(
    zf: zipfile.ZipFile, problems: list[str]
) -> tuple[str, dict[str, tuple[list[str], np.ndarray, np.ndarray]]]:
    """The dataset's name and, per split, its PNG members in canonical order (digit, then MNIST
    index as a number) with their labels and indices.

    Appends every name that breaks fast.ai's layout to problems.
    """
    names = zf.namelist()
    tops = sorted({n.split("/", 1)[0] for n in names if "/" in n.rstrip("/")})
    if len(tops) != 1:
        raise UserError(
            f"{zf.filename}: expected one dataset folder from the download stage, found {tops}"
        )
    dataset, listing = tops[0], _Listing()
    splits_met = {n.split("/")[1] for n in names if n.count("/") >= 1 and n.split("/")[1]}
    for name in names:
        listing.add(name)
    problems += listing.problems
    listed = {}
    for split in SPLITS:
        found = sorted(listing.entries[split])
        if split not in splits_met:
            problems.append(f"{dataset}/{split}: split folder missing")
        else:
            empty = sorted(listing.folders[split] - {e[0] for e in found})
            problems += [f"{dataset}/{split}/{d}: no images" for d in empty]
            if not found:
                problems.append(f"{dataset}/{split}: no images")
        labels = np.fromiter((e[0] for e in found), np.int64, len(found))
        indices = np.fromiter((e[1] for e in found), np.int64, len(found))
        listed[split] = ([e[2] for e in found], labels, indices)
    return dataset, listed


def _raise_problems(raw_zip: Path, problems: list[str]) -> None:
    if not problems:
        return
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    head = f"{raw_zip}: {len(problems)} bad input file(s):\n  "
    raise UserError(head + "\n  ".join(shown) + more)


_PNG_HEAD = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x1c\x00\x00\x00\x1c\x08\x00\x00\x00\x00"
)


def _unfiltered_pixels(data: bytes) -> bytes | None:
    """The 784 pixels of a 28x28 8-bit greyscale PNG whose rows are all unfiltered (filter 0),
    as the download stage writes them; None for any other PNG, which Pillow then decodes.

    Skips Pillow's per-file overhead (~4x faster); zlib still checks the pixel data's integrity.
    """
    if not data.startswith(_PNG_HEAD):
        return None
    pos, idat = 33, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error:
        return None
    if len(raw) != 28 * 29 or any(raw[r * 29] for r in range(28)):
        return None
    return b"".join(raw[r * 29 + 1 : (r + 1) * 29] for r in range(28))


def _decode_with_pillow(path: str, data: bytes) -> tuple[bytes | None, str | None]:
    """Any PNG Pillow reads; the problem instead when it is not 28x28 mode L or not readable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (28, 28) or im.mode != "L":
                return (
                    None,
                    f"{path}: {im.size[0]}x{im.size[1]} mode {im.mode}, expected 28x28 mode L",
                )
            return im.tobytes(), None
    except (OSError, SyntaxError, ValueError) as e:
        return None, f"{path}: not a readable PNG ({e.__class__.__name__})"


def _decode_chunk(archive: str, chunk: list[rawzip.Span]) -> tuple[bytes, list[str]]:
    """Decode PNG members into one buffer of 784 bytes each; name every member not 28x28 in
    mode L. Runs in a worker process, which reads the zip itself: only spans cross the pipe."""
    out = bytearray(len(chunk) * 784)
    problems = []
    with open(archive, "rb") as f:
        for i, span in enumerate(chunk):
            p = span[0]
            try:
                data = rawzip.read(f, span)
            except READ_ERRORS as e:
                problems.append(f"{p}: cannot be read from the zip ({e})")
                continue
            pixels = _unfiltered_pixels(data)
            if pixels is None:
                pixels, problem = _decode_with_pillow(p, data)
                if problem:
                    problems.append(problem)
                    continue
            out[i * 784 : (i + 1) * 784] = pixels
    return bytes(out), problems


def decode_images(archive: Path, members: list[rawzip.Span], problems: list[str]) -> np.ndarray:
    """All the members as uint8 [N, 28, 28], decoded in worker processes when there are many;
    every member that does not decode to 28x28 mode L is appended to problems."""
    chunks = [(str(archive), list(c)) for c in chunked(members, CHUNK)]
    results = run_chunks(_decode_chunk, chunks, [len(c[1]) for c in chunks], "tensorize")
    problems.extend(p for _, probs in results for p in probs)
    buf = b"".join(r[0] for r in results)
    return np.frombuffer(buf, np.uint8).reshape(len(members), 28, 28)


def tensorize(raw_zip: Path, out_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Stack both splits of the dataset in `raw_zip` into out_dir/{train,valid}.safetensors.

    Checks everything before writing anything: all problems are reported in one error.
    """
    problems: list[str] = []
    with rawzip.open_zip(raw_zip) as zf:
        dataset, listed = list_members(zf, problems)
        members = rawzip.spans(zf, [n for names, _, _ in listed.values() for n in names])
    # Both splits in one pass of the worker pool: valid alone is too small to be worth a pool.
    pixels = decode_images(raw_zip, members, problems)
    splits, start = {}, 0
    for s, (paths, labels, indices) in listed.items():
        images, start = pixels[start : start + len(paths)], start + len(paths)
        splits[s] = {"images": images, "labels": labels, "indices": indices}
    _raise_problems(raw_zip, problems)
    train_digits = sorted(set(splits["train"]["labels"].tolist()))
    valid_digits = sorted(set(splits["valid"]["labels"].tolist()))
    if train_digits != valid_digits:
        raise UserError(f"{raw_zip}: train has digits {train_digits} but valid has {valid_digits}")
    with atomic.atomic_path(out_dir, is_dir=True) as tmp:
        for s, arrays in splits.items():
            # One metadata key: safetensors orders several at random, and the bytes must not vary.
            save_file(arrays, tmp / f"{s}.safetensors", metadata={"dataset": dataset})
    for s, arrays in splits.items():
        for d in train_digits:
            n = int((arrays["labels"] == d).sum())
            log.info("%s %ds: [%d, 28, 28]", s, d, n)
    return splits
