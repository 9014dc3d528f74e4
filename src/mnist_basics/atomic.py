"""Outputs appear whole or not at all: write to a temporary name beside the target, then rename.
And the one reader of the stages' safetensors files, with one clear line when one is broken."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_basics.errors import BadFile, UserError


def remove(path: Path) -> None:
    """Remove a file, link or folder tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def clear_stale(target: Path) -> None:
    """Remove the `.<name>.<random>.tmp` temporaries a killed run (`kill -9`) left beside `target`:
    nothing else would."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        remove(tmp)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    On any exception (Ctrl-C and SIGTERM included) the temporary is removed and `target` is left
    as it was, so nothing half-written ever sits under an output path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    if is_dir:
        tmp.mkdir()  # the user's usual mode, as for any folder they make (mkdtemp's is 0700)
    try:
        yield tmp
        if is_dir:
            remove(target)
        os.replace(tmp, target)
    except BaseException:
        remove(tmp)
        raise


def write_bytes(target: str | Path, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode())


def read_safetensors(
    path: Path, what: str, stage: str, needs: tuple[str, ...] = (), framework: str = "pt"
) -> tuple[dict[str, Any], dict[str, str]]:
    """All arrays (torch tensors, or NumPy's for framework="np") and the metadata of a
    safetensors file that `stage` writes; one clear line if it is missing, cut short, garbled
    or without an array it `needs`."""
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        raise UserError(f"{path}: missing; run `dvc repro {stage}` first")
    try:
        with safe_open(str(path), framework=framework) as f:
            arrays, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118
        if missing := [k for k in needs if k not in arrays]:
            raise ValueError(f"no {', '.join(missing)} in it")
        return arrays, meta
    except (SafetensorError, OSError, ValueError) as e:
        why = f"not {what} file as the {stage} stage writes it ({e})"
        raise BadFile(path, why, f"`dvc repro -f {stage}` writes it again") from None
