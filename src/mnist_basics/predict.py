"""`mnist-basics predict PATH...`: the trained model's digit and class probabilities per image.
A bad input is one line on stderr (`predict: error: <path>: <what is wrong>`, the path escaped)
and exit status 2; the other inputs are still predicted."""

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mnist_basics import archives, atomic, images
from mnist_basics.errors import BadFile, UserError, printable
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


def load(rev: str | None = None, repo: str | None = None, commit: str = "") -> LoadedModel:
    """The workspace's model (rev None or "workspace"), or revision `rev`'s (at `commit`, if
    resolved already)."""
    if rev in (None, WORKSPACE):
        path = Path(repo or ".") / MODEL_PATH
        if not path.exists():
            raise UserError(f"{path}: no model; run `dvc repro` (or `dvc pull`) first")
        return _load_file(path, WORKSPACE)
    with tempfile.TemporaryDirectory(prefix="mnist-basics-model-") as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(read_at_rev(rev, repo, commit))  # load_model reads a file
        return _load_file(path, printable(rev))


def _load_file(path: Path, source: str) -> LoadedModel:
    from mnist_basics.models import load_model

    try:
        model, spec = load_model(path)
    except Exception as e:  # a corrupt or foreign safetensors file: one line, no traceback
        if source == WORKSPACE and isinstance(e, UserError):
            raise
        why = e.why if isinstance(e, BadFile) else e  # a BadFile's path is a temporary file's
        raise UserError(f"{source}: {MODEL_PATH} is not a readable model ({why})") from None
    if not all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point()):
        where = path if source == WORKSPACE else f"{source}: {MODEL_PATH}"
        raise UserError(f"{where}: weights that are not finite numbers (nan or inf)")
    return LoadedModel(model, spec.digits, asdict(spec), source)


NO_GIT = (OSError, ValueError, subprocess.TimeoutExpired)  # no git; a NUL in an argument; no answer


def git(repo: Path | str | None, *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    """`git ARGS` in `repo`, output as text (a ref name need not be UTF-8); NO_GIT if it cannot."""
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, errors="replace",
        input=input, timeout=60,
    )  # fmt: skip


class Ambiguous(UserError):
    """A name DVC finds on several commits and will not choose between."""

    def __init__(self, rev: str) -> None:
        super().__init__(
            f"{rev}: several commits have this name (experiments of several commits, none of "
            "them HEAD's, or branches of several remotes); give the one you mean by its commit id"
        )


def commit_of(rev: str, repo: str | None = None) -> str:
    """The sha of the commit `rev` names, by DVC's own `resolve_rev` (as `dvc exp apply` reads
    it); a tree, a blob or garbage is one line. `rev` reaches git only after --end-of-options."""
    from dvc.scm import SCM, RevError, SCMError, resolve_rev

    shown = printable(rev if len(rev) <= 80 else rev[:77] + "...")
    try:
        scm = SCM(repo or ".")
    except SCMError:
        where = Path(repo or ".").resolve()
        raise UserError(f"--rev {shown}: {where} is not in a git repository") from None
    sha = ""
    try:  # "" is HEAD to resolve_rev but the workspace to dvc.api: neither, here
        sha = resolve_rev(scm, rev) if rev else ""
    except Exception as e:  # RevError, or libgit2's to a malformed name (a NUL, a bad `@{...}`)
        if isinstance(e, RevError) and "ambiguous" in str(e):
            raise Ambiguous(f"--rev {shown}") from None
    finally:
        scm.close()
    if sha:
        try:  # a tree or a blob is no commit
            r = git(repo, "rev-parse", "-q", "--verify", "--end-of-options", f"{sha}^{{commit}}")
        except NO_GIT as e:
            raise UserError(f"--rev {shown}: cannot run git ({e})") from None
        if r.returncode == 0:
            return r.stdout.strip()
    raise UserError(
        f"--rev {shown}: unknown revision; it must be a commit of this repository (a branch, "
        "tag, DVC experiment or commit sha)"
    )


def read_at_rev(rev: str, repo: str | None = None, commit: str = "") -> bytes:
    """The model's bytes at a git revision or DVC experiment (`commit`, if resolved already)."""
    import dvc.api
    from dvc.exceptions import DvcException

    sha = commit or commit_of(rev, repo)
    try:  # DVC looks a bare id up as a ref name first; `^{commit}` is the commit whatever refs say
        with dvc.api.open(MODEL_PATH, repo=repo, rev=f"{sha}^{{commit}}", mode="rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"--rev {printable(rev)}: {MODEL_PATH} is not in that revision") from None
    except DvcException as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--rev {printable(rev)}: cannot read {MODEL_PATH}: {msg}") from None


def predict_prepared(model: LoadedModel, items: list[tuple[str, Prepared]]) -> list[Prediction]:
    """Digit and probabilities per item: one logit's sigmoid is P(first digit), as in mnist_loss."""
    import numpy as np
    import torch

    from mnist_basics.models import predict, predict_classes

    if not items:
        return []
    logits = predict(model.model, torch.from_numpy(np.stack([p.x for _, p in items])))
    if not logits.isfinite().all():  # finite weights can still overflow: no nan in the JSON
        raise UserError(f"{model.source}: the model's outputs are not finite numbers (inf or nan)")
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


def _why(e: OSError) -> str:
    return (e.strerror or type(e).__name__).lower()


def image_files(folder: Path, errors: list[tuple[str, str]]) -> list[Path]:
    """A folder's images, recursively, in name order: not hidden, with an extension Pillow knows
    (a photo folder's notes are no errors); a sub-folder that cannot be read, or a link to one,
    goes to `errors`."""
    from PIL import Image

    known = {e.lower() for e in Image.registered_extensions()}
    found: list[Path] = []
    try:
        for p in archives.visible_files(folder, lambda e: errors.append((e.filename, _why(e)))):
            if os.path.isdir(p):  # a link os.walk does not enter: said, not skipped unseen
                errors.append((str(p), archives.LINKED_FOLDER))
            elif p.suffix.lower() in known:
                found.append(p)
    except UserError:
        errors.append((str(folder), archives.TOO_DEEP))
    return sorted(found)


def expand(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The input files, folders expanded, and (path, what is wrong) for each that cannot be."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for s in paths:
        try:
            is_dir = stat.S_ISDIR(os.stat(s).st_mode)
        except OSError as e:
            missing = isinstance(e, FileNotFoundError)
            errors.append((s, "no such file or folder" if missing else _why(e)))
            continue
        before = len(errors)
        found = image_files(Path(s), errors) if is_dir else [Path(s)]
        if not found and len(errors) == before:
            errors.append((s, "a folder with no image files"))
        files += found
    return files, errors


def table(preds: list[Prediction], digits: tuple[int, ...]) -> str:
    """The predictions as a terminal table: path (escaped), digit, then P(d) per class."""
    head = ["image", "digit", *(f"P({d})" for d in digits)]
    rows = [
        [printable(p.path), str(p.digit), *(f"{p.probabilities[d]:.3f}" for d in digits)]
        for p in preds
    ]
    lines = [head, *rows]
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join([r[0].ljust(widths[0]), *map(str.rjust, r[1:], widths[1:])]) for r in lines
    )


def shown_paths(files: list[Path], folder: Path) -> list[Path]:
    """--show: a unique file in `folder` per input, refused here, before any work, if it exists."""
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise UserError(f"--show {printable(str(folder))}: not a folder")
    taken: set[str] = set()
    out = []
    for f in files:
        parts = [q for q in f.with_suffix("").parts if q not in (f.anchor, "..")]
        base = "_".join(parts[-2:]).lstrip("._") or "image"  # no separator, not hidden
        base = os.fsdecode(os.fsencode(base)[:200])  # a name (and its temporary) fits 255 bytes
        name, k = f"{base}.png", 1
        while name in taken:
            k += 1
            name = f"{base}-{k}.png"
        taken.add(name)
        out.append(folder / name)
        if os.path.lexists(out[-1]):
            raise UserError(_exists(out[-1]))
    return out


def _exists(path: Path) -> str:
    return f"--show: {printable(str(path))} exists; not overwritten (give a new or empty folder)"


def write_shown(prepared: Prepared, target: Path) -> None:
    """One --show image, written whole and never over a file made since shown_paths looked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic.write_new(target, images.png_bytes(prepared.image()))
    except FileExistsError:
        raise UserError(_exists(target)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("paths", nargs="+", metavar="PATH", help="image files or folders of them")
    add("--json", action="store_true", help="print JSON instead of a table")
    add(
        "--rev",
        metavar="REV",
        help="the model of this git commit, tag, branch or DVC experiment (default: the "
        "workspace's models/model.safetensors)",
    )
    add("--show", metavar="DIR", type=Path, help="write the 28x28 image the model saw per input")
    how = parser.add_mutually_exclusive_group()
    for flag, what in (
        ("--as-is", "use every image as it is (28x28, light ink on black), never preprocessed"),
        ("--preprocess", "preprocess every image, even one in MNIST's form (default: only others)"),
    ):
        how.add_argument(flag, action="store_true", help=what)


def _error(path: str, what: str) -> None:
    print(f"predict: error: {printable(path)}: {what}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Predict every input that can be read; exit status 2 if any cannot."""
    files, errors = expand(args.paths)
    for path, what in errors:
        _error(path, what)
    shown = shown_paths(files, args.show) if args.show is not None else [None] * len(files)
    model = load(args.rev)  # or a UserError, which the console script prints as one line
    import torch

    torch.set_num_threads(1)
    as_is = True if args.as_is else False if args.preprocess else None
    items, targets = [], []
    for f, target in zip(files, shown, strict=True):
        try:
            items.append((str(f), prepare(f, as_is)))
            targets.append(target)
        except ImageError as e:
            _error(str(f), str(e))
    preds = predict_prepared(model, items)
    for p, target in zip(preds, targets, strict=True):
        if target is not None:
            write_shown(p.prepared, target)
    if args.json:
        model_json = {"source": model.source, "spec": model.spec}
        doc = {"model": model_json, "images": [p.as_json() for p in preds]}
        print(json.dumps(doc, indent=1, allow_nan=False))
    elif preds:
        print(table(preds, model.digits))
    return 2 if errors or len(items) < len(files) else 0
