"""params.yaml as one typed config, checked before a stage does any work. Parsed as DVC parses
it (YAML 1.2); docs/params.md's table is made from the schema (`python -m mnist_basics.params`)."""

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mnist_basics import atomic
from mnist_basics.errors import UserError, printable

SOURCES = ("fastai", "mnist", "pypi")
SOURCE_KINDS = "fastai, mnist, pypi, a folder or .tgz path, an http(s):// or file:// URL"
MAX_BYTES = 1 << 20  # a params file is a few hundred bytes; refuse a link to /dev/zero at once


def _list(
    why_not: Callable[[Any], str], least: int, too_few: str, not_distinct: str = ""
) -> BeforeValidator:
    """A validator of a list of `least` or more entries that each pass `why_not` (which returns
    why not, or ""); `not_distinct`, if given, refuses an entry twice."""

    def check(v: Any) -> tuple:
        if not isinstance(v, list):
            raise ValueError("not a list")
        for x in v:
            if why := why_not(x):
                raise ValueError(f"entry {_shown(x)}: {why}")
        if len(v) < least:
            raise ValueError(too_few)
        if not_distinct and len(set(v)) != len(v):
            raise ValueError(not_distinct)
        return tuple(v)

    return BeforeValidator(check)


def _digit(d: Any) -> str:
    return "" if type(d) is int and 0 <= d <= 9 else "not a digit 0-9"


def _source(s: Any) -> str:
    if not isinstance(s, str):
        return "not text"
    if "://" in s and s.split("://", 1)[0].lower() not in ("http", "https", "file"):
        return "only http, https and file URLs are followed"
    return "" if s.strip() else "an empty source"


DIGITS = _list(_digit, 2, "two or more digits are needed", "the digits must be distinct")


def key(default: Any, doc: str, allowed: str = "", **constraints: Any) -> Any:
    """A params field: default, doc, bounds; `allowed` in words where the type cannot say it."""
    extra = {"allowed": allowed} if allowed else None
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


Number = Annotated[float, Field(allow_inf_nan=False)]


class Section(BaseModel):
    # strict: a bool is no number and 2.5 no integer, as the user wrote them
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Data(Section):
    digits: Annotated[tuple[int, ...], DIGITS] = key(
        (3, 7),
        "Digits to classify; [3, 7] is the book's MNIST_SAMPLE. The first is the positive class "
        "of the two-digit models.",
        "two or more distinct digits 0-9",
    )
    sources: Annotated[tuple[str, ...], _list(_source, 1, "at least 1 source is needed")] = key(
        SOURCES,
        "Where the images come from, tried in order; the first that delivers verified data serves.",
        SOURCE_KINDS,
    )
    timeout: Number = key(
        10.0,
        "Seconds a source may go without progress (1 KiB) before it is given up; all of a "
        "source's downloads may take 60 times that.",
        gt=0,
        le=600,
    )


class Train(Section):
    model: Literal["linear", "simple_net", "cnn"] = key(
        "linear",
        "linear: the book's `linear1`; simple_net: 784-hidden-out with a ReLU; cnn: a small CNN.",
    )
    hidden: int = key(30, "simple_net's hidden width (the book's 30).", ge=1, le=4096)
    width: int = key(16, "cnn's channels in its first block; the next are 2x and 4x.", ge=1, le=256)
    loss_func: Literal["mnist_loss", "cross_entropy"] = key(
        "mnist_loss",
        "mnist_loss: the book's, for two digits (one logit); cross_entropy: softmax over one "
        "logit per digit.",
    )
    optimizer: Literal["basic", "sgd", "adam"] = key(
        "basic",
        "basic: the book's BasicOptim (`p -= p.grad * lr`); sgd: torch.optim.SGD; adam: "
        "torch.optim.Adam.",
    )
    lr: Number = key(1.0, "Learning rate (the book's: 1.0 linear, 0.1 simple_net).", gt=0)
    epochs: int = key(20, "Epochs (the book's: 20 linear, 40 simple_net).", ge=1, le=100_000)
    batch_size: int = key(256, "Mini-batch size (the book's).", ge=1, le=1_000_000)
    init_std: Number = key(  # a bound the initial weights cannot pass learner.MAX_WEIGHT by
        1.0, "Std of the book's `init_params` for the linear model.", gt=0, le=1e5
    )
    label_smoothing: Number = key(
        0.0, "cross_entropy's label smoothing (0: none; 0.1 helps the ten-digit CNN).", ge=0, lt=1
    )
    momentum: Number = key(0.0, "Momentum of the sgd optimizer.", ge=0, lt=1)
    weight_decay: Number = key(0.0, "Weight decay of sgd and adam.", ge=0, le=1)
    schedule: Literal["constant", "one_cycle"] = key(
        "constant",
        "constant: lr throughout, as in the chapter; one_cycle: fastai's fit_one_cycle.",
    )
    shuffle: bool = key(False, "Shuffle the training set each epoch (the book does not).")
    shift: int = key(
        0,
        "Random shift of each training image, pixels per axis (0: none, as in the book; 2 helps "
        "drawn digits).",
        ge=0,
        le=8,
    )
    rotate: Number = key(
        0.0,
        "Random rotation of each training image, degrees (0: none; 12 helps drawn digits).",
        ge=0,
        le=45,
    )
    seed: int = key(42, "Seed of every random draw.", ge=0, lt=2**32)
    threads: int = key(
        1,
        "CPU threads of the kernels; part of the result, so a param, never the machine's free "
        "cores.",
        ge=1,
        le=256,
    )
    kernels: Literal["portable", "native"] = key(
        "portable",
        "CPU kernels: portable gives the same bytes on every x86-64 CPU; native is the fastest "
        "this CPU has, the same bytes run after run on one CPU kind.",
    )
    device: str = key(
        "cpu",
        "Where to train; the same bytes are promised on the CPU.",
        "cpu, cuda, cuda:N or mps",
        pattern=r"^(cpu|cuda|mps|cuda:\d+)$",
    )


class Evaluate(Section):
    gallery: int = key(36, "Misclassified images in the gallery.", ge=0, le=400)


class Params(Section):
    data: Data = Field(default_factory=Data)
    train: Train = Field(default_factory=Train)
    evaluate: Evaluate = Field(default_factory=Evaluate)


SECTIONS: dict[str, type[Section]] = {"data": Data, "train": Train, "evaluate": Evaluate}


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def allowed(schema: dict) -> str:
    """What a field allows, in words, from its JSON schema."""
    if "allowed" in schema:
        return schema["allowed"]
    if "enum" in schema:
        return "one of " + ", ".join(schema["enum"])
    if schema.get("type") == "boolean":
        return "true or false"
    kind = "an integer" if schema.get("type") == "integer" else "a number"
    bounds = [f"{word} {_num(schema[b])}" for b, word in BOUNDS.items() if b in schema]
    return " ".join([kind, ", ".join(bounds)]).strip()


def _fields() -> dict[str, dict]:
    """Each `section.key`'s JSON schema, in params.yaml's order."""
    defs = Params.model_json_schema()["$defs"]
    return {
        f"{sec}.{name}": schema
        for sec, cls in SECTIONS.items()
        for name, schema in defs[cls.__name__]["properties"].items()
    }


def _shown(v: Any, limit: int = 300, within: tuple[Any, ...] = ()) -> str:
    """A value as the user wrote it, text in quotes ("1" is not 1); cut short, for YAML aliases can
    make a list or mapping of a billion entries; RecursionError for one that holds itself."""
    if isinstance(v, list | tuple | dict):
        if any(v is outer for outer in within):
            raise RecursionError("a value that contains itself")
        parts: list[str] = []
        for k, x in v.items() if isinstance(v, dict) else enumerate(v):
            if limit <= 0:
                parts.append("...")
                break
            name = f"{_shown(k, limit)}: " if isinstance(v, dict) else ""
            parts.append(name + _shown(x, limit, (*within, v)))
            limit -= len(parts[-1]) + 2
        ends = "{}" if isinstance(v, dict) else "[]"
        return ends[0] + ", ".join(parts) + ends[1]
    if isinstance(v, float) and not math.isfinite(v):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(v, ".nan")
    text = json.dumps(v, ensure_ascii=False) if isinstance(v, bool | str) or v is None else str(v)
    return text if len(text) <= limit else text[:limit] + ('..."' if isinstance(v, str) else "...")


WHY = {  # what the user reads for a pydantic error type, filled in from its context
    "value_error": "{error}",  # ours, which may hold the user's value: filled in, never a format
    "model_type": "not a mapping",
    "int_type": "not an integer",
    "float_type": "not a number",
    "finite_number": "not a finite number",
    "bool_type": "not true or false",
    "literal_error": "no such choice",
    "string_pattern_mismatch": "no such choice",
    "string_type": "not text",
    "greater_than": "not > {gt}",
    "greater_than_equal": "not >= {ge}",
    "less_than": "not < {lt}",
    "less_than_equal": "not <= {le}",
}


def _line(err: dict) -> str:
    """One pydantic error as the line the user reads."""
    if err["type"] == "recursion_loop":
        raise RecursionError
    loc = [x if isinstance(x, str) and x.isidentifier() else json.dumps(str(x)) for x in err["loc"]]
    name = ".".join(loc) or "the file"  # a key with a dot in it, or a list as a key, is quoted
    if err["type"] in ("extra_forbidden", "invalid_key"):  # a key not in the schema, or not text
        prefix = ".".join(loc[:-1])
        known = SECTIONS[prefix].model_fields if prefix else SECTIONS
        allowed_keys = ", ".join(f"{prefix}.{k}" if prefix else k for k in known)
        return f"unknown key {name} (= {_shown(err['input'])}); allowed: {allowed_keys}"
    bounds = {
        k: _num(v) if isinstance(v, int | float) else v for k, v in err.get("ctx", {}).items()
    }
    why = WHY.get(err["type"], "{msg}").format(msg=err["msg"], **bounds)
    can = "a mapping of keys to values" if err["type"] == "model_type" else allowed(_fields()[name])
    return f"{name} = {_shown(err['input'])} is invalid ({why}); allowed: {can}"


def validate(raw: Any) -> Params:
    """Params from the parsed YAML; UserError naming the first bad key."""
    try:
        _refuse_keys_not_text(raw)
        try:
            p = Params.model_validate({} if raw is None else raw)
        except ValidationError as e:
            raise UserError(f"params.yaml: {_line(e.errors()[0])}") from None
    except RecursionError:  # a YAML alias inside its own anchor: `digits: &a [3, *a]`
        raise UserError("params.yaml: a value contains itself (a YAML alias)") from None
    n = len(p.data.digits)
    if p.train.loss_func == "mnist_loss" and n != 2:  # one logit tells two digits apart, no more
        raise UserError(
            f"params.yaml: train.loss_func = mnist_loss is invalid with {n} digits in "
            "data.digits; allowed: cross_entropy (mnist_loss needs exactly two digits)"
        )
    t = p.train  # a key that would do nothing with the loss or optimizer chosen
    for key, other, owners in (
        ("label_smoothing", "loss_func", ("cross_entropy",)),
        ("momentum", "optimizer", ("sgd",)),
        ("weight_decay", "optimizer", ("sgd", "adam")),
    ):
        if getattr(t, key) and getattr(t, other) not in owners:
            raise UserError(
                f"params.yaml: train.{key} = {getattr(t, key)} is invalid with train.{other} = "
                f"{getattr(t, other)}; allowed: 0 (it applies to {' and '.join(owners)} only)"
            )
    return p


def _refuse_keys_not_text(raw: Any) -> None:
    """pydantic writes a bad key into its error whole, before `_shown` can cut it short: a YAML
    list as a key (a tuple) of 10,000 aliases took 6 s and made a line of 200 MB."""
    for name, section in raw.items() if isinstance(raw, dict) else ():
        for key in [name, *(section if isinstance(section, dict) else ())]:
            if not isinstance(key, str):
                raise UserError(
                    f"params.yaml: a key that is not text ({_shown(key)}); allowed: names, as "
                    f"the sections {', '.join(SECTIONS)} and their keys"
                )


YAML_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # a line's end, as ruamel counts lines


def parse(text: str) -> Any:
    """params.yaml's text as DVC reads it; UserError with the line and column if it is no YAML."""
    from ruamel.yaml import YAML, YAMLError

    try:
        return YAML(typ="safe").load(text)
    except (YAMLError, ValueError) as e:  # a timestamp like 2024-13-01 raises ValueError
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        if (at := getattr(e, "position", None)) is not None:  # a ReaderError's: of UTF-8 bytes
            before = text.encode("utf-8", "surrogateescape")[:at].decode("utf-8", "replace")
            lines = YAML_BREAKS.split(before.removeprefix("\ufeff"))
            where = f"line {len(lines)}, column {len(lines[-1]) + 1}: "
        problem = getattr(e, "problem", None) or str(e).partition("\n")[0]  # a key's text escaped
        raise UserError(f"params.yaml: not valid YAML: {where}{printable(problem)}") from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read and check params.yaml, which must state every key; without the file, the defaults."""
    try:
        with atomic.open_regular(Path(path)) as f:
            data = f.read(MAX_BYTES + 1)
    except UserError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            return validate({})
        raise
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: more than {MAX_BYTES:,} bytes; a params file is a few hundred")
    try:
        raw = parse(data.decode())
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    p = validate(raw)
    require_every_key(raw)
    return p


def require_every_key(raw: Any) -> None:
    """UserError naming the first key valid params `raw` leave out: its default would be used
    and recorded nowhere (DVC records only the keys params.yaml states)."""
    for sec, cls in SECTIONS.items():  # valid, so each section is a mapping or absent
        given = (raw or {}).get(sec) or {}
        for name, field in cls.model_fields.items():
            if name not in given:
                raise UserError(
                    f"params.yaml: {sec}.{name} is missing; every key stands in params.yaml, so "
                    f"that dvc.lock and `dvc exp show` record the value a run used; allowed: "
                    f"{name}: {_shown(field.default)} (its default) or another value"
                )


def markdown_table() -> str:
    """docs/params.md's params reference, made from the schema."""
    import yaml

    def flow(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True).removesuffix("...\n").strip()

    rows = [
        f"| `{name}` | `{flow(s['default'])}` | {allowed(s)} | {s['description']} |"
        for name, s in _fields().items()
    ]
    return "\n".join(["| key | default | allowed | what it does |", "|---|---|---|---|", *rows])


def defaults() -> dict[str, dict[str, Any]]:
    """params.yaml with every default, as a plain dict."""
    return {sec: cls().model_dump(mode="json") for sec, cls in SECTIONS.items()}


if __name__ == "__main__":
    print(markdown_table())
