"""A tree in fast.ai's layout (train|valid/<digit>/<index>.png): validate it, copy the digits asked.

Such a tree is the user's own data (no checksum to hold it to), so every structural fault is
found and reported at once, up to MAX_LISTED, rather than one per run. fast.ai's mnist_png.tgz
names its splits training/ and testing/; those are read as train/ and valid/.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from mnist_basics.download.known import SPLIT_ALIASES, SPLITS
from mnist_basics.errors import UserError
from mnist_basics.parallel import chunked, run_chunks

MAX_LISTED = 20
CHUNK_FILES = 2000


def _split_dir(root: Path, split: str) -> Path | None:
    return next((root / a for a in SPLIT_ALIASES[split] if (root / a).is_dir()), None)


def _has_splits(folder: Path) -> bool:
    return any(_split_dir(folder, s) for s in SPLITS)


def find_root(folder: Path) -> Path:
    """The folder holding the splits: `folder` itself, or its one sub-folder (mnist_sample/)."""
    if _has_splits(folder):
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and _has_splits(subdirs[0]):
        return subdirs[0]
    raise UserError(
        "not in fast.ai's layout (train/<digit>/<index>.png and valid/...), "
        "nor a folder of the four IDX .gz files"
    )


def _is_index(stem: str) -> bool:
    """`<int>` written the one way (no sign, no leading zeros), so names map 1:1 to indices."""
    return stem.isdigit() and str(int(stem)) == stem


def _scan_digit(folder: Path, rel: str, dst: Path, found: list, problems: list[str]) -> None:
    count = 0
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.suffix != ".png":
            problems.append(f"{rel}/{entry.name}: stray entry (only <index>.png files belong)")
        elif not _is_index(entry.stem):
            problems.append(f"{rel}/{entry.name}: name is not <index>.png")
        else:
            found.append((str(entry), str(dst / entry.name), f"{rel}/{entry.name}"))
            count += 1
    if count == 0:
        problems.append(f"{rel}/: no PNGs")


def _scan_split(
    root: Path, split: str, digits: tuple[int, ...], out: Path, found: list, problems: list[str]
) -> None:
    src = _split_dir(root, split)
    if src is None:
        problems.append(f"{split}/: missing")
        return
    for entry in sorted(src.iterdir()):
        if not entry.is_dir():
            problems.append(f"{src.name}/{entry.name}: stray file (only digit folders belong)")
        elif entry.name not in "0123456789" or len(entry.name) != 1:
            problems.append(f"{src.name}/{entry.name}/: folder name is not a digit")
    for d in digits:
        folder, rel = src / str(d), f"{src.name}/{d}"
        if not folder.is_dir():
            problems.append(f"{rel}/: requested digit {d} missing")
            continue
        _scan_digit(folder, rel, out / split / str(d), found, problems)


def check_and_copy(files: list[tuple[str, str, str]], copy: bool) -> list[str]:
    """Check each PNG decodes as 28x28 mode L, copy it if `copy`; return the problems.

    Runs in a worker process.
    """
    problems = []
    for src, dst, rel in files:
        data = Path(src).read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "PNG" or im.size != (28, 28) or im.mode != "L":
                    problems.append(
                        f"{rel}: {im.format} {im.size[0]}x{im.size[1]} mode "
                        f"{im.mode}, not a 28x28 mode L PNG"
                    )
                    continue
                im.load()
        except Exception as e:  # any decoder failure is the file's fault, reported as such
            problems.append(f"{rel}: does not decode as PNG ({type(e).__name__})")
            continue
        if copy:
            Path(dst).write_bytes(data)
    return problems


def report(problems: list[str]) -> UserError:
    """One error listing the first MAX_LISTED problems and how many more there are."""
    lines = [f"    {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"    ... and {len(problems) - MAX_LISTED} more")
    head = f"{len(problems)} problem(s) in fast.ai's layout:\n"
    return UserError(head + "\n".join(lines))


def _digit_folders(root: Path, out: Path, digits: tuple[int, ...]) -> list[tuple[Path, Path]]:
    """(source, destination) digit folders of both splits (all present once validated)."""
    pairs = []
    for split in SPLITS:
        src = _split_dir(root, split)
        pairs += [(src / str(d), out / split / str(d)) for d in digits if src is not None]
    return pairs


def copy_tree(folder: Path, out: Path, digits: tuple[int, ...], *, move: bool = False) -> int:
    """Validate the fast.ai tree in `folder` and copy the requested digits to `out`.

    With `move` (a tree we extracted into scratch, on the same filesystem), the digit folders
    are renamed into place instead of copied file by file.
    """
    root = find_root(folder)
    found: list[tuple[str, str, str]] = []
    problems: list[str] = []
    for split in SPLITS:
        _scan_split(root, split, digits, out, found, problems)
    folders = _digit_folders(root, out, digits)
    for _, dst in folders:
        (dst.parent if move else dst).mkdir(parents=True, exist_ok=True)
    chunks = [(list(c), not move) for c in chunked(found, CHUNK_FILES)]
    for p in run_chunks(check_and_copy, chunks, [len(c[0]) for c in chunks], "checking PNGs"):
        problems.extend(p)
    if problems:
        raise report(problems)
    if move:
        for src, dst in folders:
            src.rename(dst)
    return len(found)
