"""`mnist-basics predict PATH...`: the trained model's digit for each image, with the probability
of every class it knows.

Images not in MNIST's form are brought to it first (mnist_basics.preprocess). The model is the
workspace's models/model.safetensors, or with `--rev` any git revision, tag, branch or DVC
experiment's, read through `dvc.api.open` without checking anything out. A bad input is one line
on stderr (`predict: error: <path>: <what is wrong>`) and exit status 2; the other inputs are
still predicted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mnist_basics.errors import BadFile, UserError
from mnist_basics.preprocess import ImageError, Prepared, prepare

MODEL_PATH = "models/model.safetensors"
WORKSPACE = "workspace"


@dataclass
class LoadedModel:
    """A model ready to predict, and where it came from: "workspace" or the revision."""

    model: Any  # torch.nn.Module; torch is imported only when a model is loaded
    digits: tuple[int, ...]
    spec: dict
    source: str


@dataclass
class Prediction:
    path: str
    digit: int
    probabilities: dict[int, float]
    prepared: Prepared = field(repr=False)

    def as_json(self) -> dict:
        return {
            "path": self.path,
            "digit": self.digit,
            "probabilities": {str(d): p for d, p in self.probabilities.items()},
            "preprocessed": not self.prepared.as_is,
            "inverted": self.prepared.inverted,
        }


def load(rev: str | None = None, repo: str | None = None) -> LoadedModel:
    """The workspace's model (rev None or "workspace"), or revision `rev`'s: the one way both
    `predict` and `serve` get a model."""
    if rev in (None, WORKSPACE):
        path = Path(repo or ".") / MODEL_PATH
        if not path.exists():
            raise UserError(f"{path}: no model; run `dvc repro` (or `dvc pull`) first")
        return _load_file(path, WORKSPACE)
    with tempfile.TemporaryDirectory(prefix="mnist-basics-model-") as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(read_at_rev(rev, repo))  # load_model reads a file
        return _load_file(path, rev)


def _load_file(path: Path, source: str) -> LoadedModel:
    from mnist_basics.models import load_model

    try:
        model, spec = load_model(path)
    except UserError as e:
        if source == WORKSPACE:
            raise
        why = e.why if isinstance(e, BadFile) else e  # its path is a temporary file's
        raise UserError(f"{source}: {MODEL_PATH} is not a readable model ({why})") from None
    except Exception as e:  # a corrupt or foreign safetensors file: one line, no traceback
        raise UserError(f"{source}: {MODEL_PATH} is not a readable model ({e})") from None
    return LoadedModel(model, spec.digits, asdict(spec), source)


def read_at_rev(rev: str, repo: str | None = None) -> bytes:
    """The bytes of the model at a git revision or DVC experiment, without a checkout."""
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc.scm import RevError

    unknown = f"--rev {rev}: unknown revision"
    try:
        with dvc.api.open(MODEL_PATH, repo=repo, rev=rev, mode="rb") as f:
            return f.read()
    except RevError:
        raise UserError(
            f"{unknown} (not a commit, branch, tag or DVC experiment of this repository)"
        ) from None
    except FileNotFoundError:
        raise UserError(f"--rev {rev}: {MODEL_PATH} is not in that revision") from None
    except DvcException as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "unknown" in msg.lower() or "revision" in msg.lower():
            raise UserError(f"{unknown} ({msg})") from None
        raise UserError(f"--rev {rev}: cannot read {MODEL_PATH}: {msg}") from None


def predict_prepared(model: LoadedModel, items: list[tuple[str, Prepared]]) -> list[Prediction]:
    """The digit (the pipeline's predict_classes) and class probabilities of each item: with one
    logit (two-digit models) its sigmoid is P(first digit), as the book's mnist_loss reads it;
    with several, their softmax."""
    import numpy as np
    import torch

    from mnist_basics.models import predict, predict_classes

    if not items:
        return []
    logits = predict(model.model, torch.from_numpy(np.stack([p.x for _, p in items])))
    if logits.shape[1] == 1:
        p_first = logits[:, 0].sigmoid()
        probs = torch.stack([p_first, 1 - p_first], 1)
    else:
        probs = logits.softmax(1)
    classes = predict_classes(logits).tolist()
    return [
        Prediction(path, model.digits[c], dict(zip(model.digits, pr, strict=True)), prep)
        for (path, prep), c, pr in zip(items, classes, probs.tolist(), strict=True)
    ]


def image_files(folder: Path) -> list[Path]:
    """A folder's images, recursively, in name order: not hidden, with an extension Pillow
    knows (so notes and sidecar files in a photo folder are not errors)."""
    from PIL import Image

    known = {e.lower() for e in Image.registered_extensions()}
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in known
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def expand(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The input files, folders expanded; (path, what is wrong) for what is missing or empty."""
    files, errors = [], []
    for s in paths:
        p = Path(s)
        if p.is_dir():
            found = image_files(p)
            files += found
            if not found:
                errors.append((s, "a folder with no image files"))
        elif p.exists():
            files.append(p)
        else:
            errors.append((s, "no such file or folder"))
    return files, errors


def table(preds: list[Prediction], digits: tuple[int, ...]) -> str:
    """The predictions as a terminal table: path, digit, then P(d) per class."""
    head = ["image", "digit", *(f"P({d})" for d in digits)]
    rows = [[p.path, str(p.digit), *(f"{p.probabilities[d]:.3f}" for d in digits)] for p in preds]
    lines = [head, *rows]
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join([r[0].ljust(widths[0]), *map(str.rjust, r[1:], widths[1:])]) for r in lines
    )


def write_shown(preds: list[Prediction], folder: Path) -> None:
    """--show: each input's 28x28 image, named after its folder and stem, made unique."""
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    for p in preds:
        base = "_".join(Path(p.path).with_suffix("").parts[-2:]).lstrip("._") or "image"
        name, k = f"{base}.png", 1
        while name in taken:
            k += 1
            name = f"{base}-{k}.png"
        taken.add(name)
        p.prepared.image().save(folder / name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("paths", nargs="+", metavar="PATH", help="image files or folders of them")
    add("--json", action="store_true", help="print JSON instead of a table")
    add(
        "--rev",
        metavar="REV",
        help="the model of this git revision, tag, branch or DVC experiment (default: the "
        "workspace's models/model.safetensors)",
    )
    add("--show", metavar="DIR", type=Path, help="write the 28x28 image the model saw per input")


def _error(what: str) -> None:
    print(f"predict: error: {what}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Predict every input that can be read; exit status 2 if any cannot."""
    files, errors = expand(args.paths)
    for path, what in errors:
        _error(f"{path}: {what}")
    model = load(args.rev)  # or a UserError, which the console script prints as one line
    import torch

    torch.set_num_threads(1)
    items = []
    for f in files:
        try:
            items.append((str(f), prepare(f)))
        except ImageError as e:
            _error(f"{f}: {e}")
    preds = predict_prepared(model, items)
    if args.show is not None and preds:
        write_shown(preds, args.show)
    if args.json:
        images = [p.as_json() for p in preds]
        doc = {"model": {"source": model.source, "spec": model.spec}, "images": images}
        print(json.dumps(doc, indent=1))
    elif preds:
        print(table(preds, model.digits))
    return 2 if errors or len(items) < len(files) else 0
