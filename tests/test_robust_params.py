"""Params: a bad params.yaml stops a stage before any work, in one line, exit 2.

Each stage script runs as dvc runs it (`python stages/<stage>.py` in the project folder) in a
temp project whose outputs exist from a previous run; a bad param must leave them byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_basics import params as params_mod
from mnist_basics.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("download", "tensorize", "baseline", "train", "evaluate")


def run_stage(project: Path, stage: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{stage}.py")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def snapshot(project: Path) -> dict[str, str]:
    """sha256 of every file in the project but params.yaml."""
    return {
        str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(project.rglob("*"))
        if p.is_file() and p.name != "params.yaml"
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, synthetic_37: Path) -> Path:
    """A project folder where every stage has run once (2 epochs), outputs in place."""
    project = tmp_path_factory.mktemp("robust_params")
    good = params_mod.defaults()
    good["data"]["sources"] = [str(synthetic_37)]
    good["train"]["epochs"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(good, sort_keys=False))
    for stage in STAGES:
        r = run_stage(project, stage)
        assert r.returncode == 0, r.stderr
    return project


def _params(section: str, key: str, value: object, synthetic: Path) -> dict:
    p = params_mod.defaults()
    p["data"]["sources"] = [str(synthetic)]
    p[section][key] = value
    return p


# (stage, section, key, value as written in YAML, words the one line must hold)
BAD = [
    ("train", "train", "lr", "0", ["train.lr = 0", "a number > 0"]),
    ("train", "train", "lr", "-0.5", ["train.lr = -0.5", "a number > 0"]),
    ("train", "train", "lr", '"abc"', ['train.lr = "abc"', "a number > 0"]),
    ("train", "train", "lr", ".inf", ["train.lr = .inf", "finite"]),
    ("train", "train", "lr", "yes", ['train.lr = "yes"', "not a number", "a number > 0"]),
    ("train", "train", "lr", "1e-3x", ['train.lr = "1e-3x"', "not a number"]),
    ("train", "train", "shuffle", "on", ['train.shuffle = "on"', "true or false"]),
    ("train", "train", "seed", "20:00", ['train.seed = "20:00"', "not an integer"]),
    ("train", "train", "epochs", "0", ["train.epochs = 0", "an integer >= 1, <= 100,000"]),
    ("train", "train", "epochs", "2.5", ["train.epochs = 2.5", "an integer >= 1"]),
    (
        "train",
        "train",
        "batch_size",
        "0",
        ["train.batch_size = 0", "an integer >= 1, <= 1,000,000"],
    ),
    ("train", "train", "batch_size", "100000000", ["= 100000000", "<= 1,000,000"]),
    ("train", "train", "model", "resnet", ['train.model = "resnet"', "linear, simple_net, cnn"]),
    ("train", "train", "optimizer", "rmsprop", ['"rmsprop"', "basic, sgd, adam"]),
    ("train", "train", "loss_func", "hinge", ['loss_func = "hinge"', "mnist_loss, cross_entropy"]),
    ("train", "train", "device", "tpu", ['train.device = "tpu"', "cpu, cuda, cuda:N or mps"]),
    ("train", "train", "device", "cuda:7", ['train.device = "cuda:7"', "allowed here: cpu"]),
    ("train", "train", "shuffle", "yes please", ["train.shuffle", "true or false"]),
    ("train", "train", "threads", "0", ["train.threads = 0", "an integer >= 1, <= 256"]),
    ("evaluate", "evaluate", "gallery", "-1", ["evaluate.gallery = -1", ">= 0, <= 400"]),
    ("download", "data", "digits", "3", ["data.digits = 3", "not a list", "two or more distinct"]),
    ("download", "data", "digits", "[3]", ["data.digits = [3]", "two or more distinct"]),
    ("download", "data", "digits", "[3, 3]", ["data.digits = [3, 3]", "must be distinct"]),
    ("download", "data", "digits", "[3, 10]", ["data.digits = [3, 10]", "entry 10", "0-9"]),
    ("train", "data", "digits", "[3, -1]", ["data.digits = [3, -1]", "entry -1", "0-9"]),
    ("download", "data", "sources", '["ftp://x.org/a.tgz"]', ["ftp://x.org/a.tgz", "http"]),
    ("download", "data", "sources", "[]", ["data.sources = []", "at least 1"]),
    ("download", "data", "sources", "fastai", ['data.sources = "fastai"', "not a list"]),
    ("download", "data", "timeout", "0", ["data.timeout = 0", "> 0, <= 600"]),
    ("download", "data", "bogus", "1", ["unknown key data.bogus (= 1)", "data.digits"]),
    ("train", "train", "learning_rate", "0.1", ["unknown key train.learning_rate (= 0.1)"]),
    ("train", "train", "loss", "auto", ['unknown key train.loss (= "auto")', "loss_func"]),
]


def _bad_yaml(synthetic: Path, section: str, key: str, value: str) -> str:
    """The defaults with `key` written as the raw YAML `value` (so "abc", 3, 1e-3 stay as typed)."""
    p = _params(section, key, "__BAD__", synthetic)
    return yaml.safe_dump(p, sort_keys=False).replace("__BAD__", value)


def assert_one_line_error(r: subprocess.CompletedProcess, stage: str, words: list[str]) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{stage}: error: params.yaml: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


def _fails_cleanly_with(done: Path, stage: str, params_text: str, words: list[str]) -> None:
    """The stage, run with params_text as params.yaml, fails in one line and changes nothing."""
    before = snapshot(done)
    original = (done / "params.yaml").read_text()
    (done / "params.yaml").write_text(params_text)
    try:
        r = run_stage(done, stage)
    finally:
        (done / "params.yaml").write_text(original)
    assert_one_line_error(r, stage, words)
    assert snapshot(done) == before


@pytest.mark.parametrize(("stage", "section", "key", "value", "words"), BAD)
def test_bad_param_is_one_line_exit_2_outputs_untouched(
    done: Path,
    synthetic_37: Path,
    stage: str,
    section: str,
    key: str,
    value: str,
    words: list[str],
) -> None:
    text = _bad_yaml(synthetic_37, section, key, value)
    assert params_mod.parse(text)[section][key] == params_mod.parse(value)
    _fails_cleanly_with(done, stage, text, words)


@pytest.mark.parametrize("stage", STAGES)
def test_a_key_left_out_of_params_yaml_stops_every_stage(
    done: Path, synthetic_37: Path, stage: str
) -> None:
    """`dvc exp run -S '~train.epochs'` drops the key: the stage would train the default while
    dvc.lock and `dvc exp show` record no epochs at all."""
    p = _params("train", "epochs", 20, synthetic_37)
    del p["train"]["epochs"]
    words = ["train.epochs is missing", "allowed: epochs: 20 (its default)"]
    _fails_cleanly_with(done, stage, yaml.safe_dump(p, sort_keys=False), words)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("train: [1\n", ["not valid YAML", "line 2, column 1"]),
        ("bogus: 1\n", ["unknown key bogus (= 1)", "data, train, evaluate"]),
        ("evalute: {gallery: 3}\n", ["unknown key evalute", "data, train, evaluate"]),
        ("- 1\n", ["the file = [1] is invalid", "a mapping"]),
        ("train:\n  seed: 2024-13-01\n", ["not valid YAML", "month must be in 1..12"]),
        ("data:\n  digits: &a [3, *a]\n", ["a value contains itself"]),
        ('evaluate:\n  "a.b": 1\n', ['unknown key evaluate."a.b" (= 1)', "evaluate.gallery"]),
        ('"x.y": 1\n', ['unknown key "x.y" (= 1)', "data, train, evaluate"]),
        ("? [a, b]\n: 1\n", ['a key that is not text (["a", "b"])', "data, train, evaluate"]),
        ("train:\n  1: 2\n", ["a key that is not text (1)", "and their keys"]),
        ("# é日本\ntrain:\n  lr: 0.1\x07\n", ["YAML: line 3, column 10: unacceptable character"]),
        ('train: {"a\\nb": 1, "a\\nb": 2}\n', ['duplicate key "a\\nb"']),  # no line forged
    ],
)
@pytest.mark.parametrize("stage", STAGES)
def test_broken_params_file_stops_stages_that_read_no_section(
    done: Path, stage: str, text: str, words: list[str]
) -> None:
    _fails_cleanly_with(done, stage, text, words)


def test_train_checks_the_device_before_loading_data(tmp_path: Path, synthetic_37: Path) -> None:
    """No data/tensors at all: the error is the device's, so it was checked first."""
    p = _params("train", "device", "cuda:3", synthetic_37)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = run_stage(tmp_path, "train")
    assert_one_line_error(r, "train", ['train.device = "cuda:3"', "not on this machine"])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["params.yaml"]


def test_mnist_loss_with_three_digits_is_a_params_error(tmp_path: Path, synthetic_37: Path) -> None:
    p = _params("train", "loss_func", "mnist_loss", synthetic_37)
    p["data"]["digits"] = [1, 4, 8]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = run_stage(tmp_path, "train")
    assert_one_line_error(r, "train", ["train.loss_func = mnist_loss", "3 digits", "cross_entropy"])


def test_label_smoothing_with_mnist_loss_is_a_params_error(
    tmp_path: Path, synthetic_37: Path
) -> None:
    p = _params("train", "label_smoothing", 0.1, synthetic_37)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = run_stage(tmp_path, "train")
    assert_one_line_error(r, "train", ["train.label_smoothing = 0.1", "mnist_loss", "allowed: 0"])


@pytest.mark.parametrize(
    ("key", "optimizer", "owners"),
    [
        ("momentum", "basic", "sgd"),
        ("momentum", "adam", "sgd"),
        ("weight_decay", "basic", "sgd and"),
    ],
)
def test_a_key_the_optimizer_ignores_is_a_params_error(
    key: str, optimizer: str, owners: str
) -> None:
    """momentum with the book's BasicOptim would be a run that looks like a momentum run and is
    not one."""
    with pytest.raises(UserError) as e:
        params_mod.validate({"train": {key: 0.5, "optimizer": optimizer}})
    assert str(e.value) == (
        f"params.yaml: train.{key} = 0.5 is invalid with train.optimizer = {optimizer}; "
        f"allowed: 0 (it applies to {owners}{' adam' if owners == 'sgd and' else ''} only)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "bogus: &a [*a]\n",  # an unknown section that holds itself
        "&a [*a]\n",  # the file itself
        "data: {sources: &a [mnist, *a]}\n",
    ],
)
def test_a_value_that_holds_itself_is_one_line_anywhere(tmp_path: Path, text: str) -> None:
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError, match="a value contains itself"):
        params_mod.load(tmp_path / "params.yaml")


def test_a_value_with_braces_is_one_line() -> None:
    """The value is quoted in the line, never read as a format string."""
    with pytest.raises(UserError, match=r"data\.digits = \[\"\{a\}\"\] is invalid"):
        params_mod.validate({"data": {"digits": ["{a}"]}})


def test_a_key_or_value_that_would_forge_lines_is_shown_escaped_and_short() -> None:
    with pytest.raises(UserError) as e:
        params_mod.validate({"evaluate": {"x\ny\x1b[31m": 1}})
    assert str(e.value) == (
        'params.yaml: unknown key evaluate."x\\ny\\u001b[31m" (= 1); allowed: evaluate.gallery'
    )
    with pytest.raises(UserError) as e:
        params_mod.validate({"train": {"model": "a" * 5000}})
    assert len(str(e.value)) < 500 and '"aaa...' not in str(e.value) and 'a..."' in str(e.value)


def test_an_alias_bomb_is_shown_short_and_at_once() -> None:
    """Nine lines of aliases make a list of a billion entries; the error shows its start."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    raw = yaml.safe_load("\n".join([*lines, "train: {lr: *l8}"]))
    with pytest.raises(UserError, match=r"train\.lr = \[\[.*\.\.\.\] is invalid") as e:
        params_mod.validate({"train": raw["train"]})
    assert len(str(e.value)) < 1000


def test_a_mapping_alias_bomb_is_shown_short_and_at_once() -> None:
    """Aliases nest mappings as they do lists: a million leaves under an unknown key, cut short."""
    lines = ["m0: &m0 {k: 1}"]
    keys = [f"k{j}" for j in range(10)]
    lines += [f"m{i}: &m{i} {{{', '.join(f'{k}: *m{i - 1}' for k in keys)}}}" for i in range(1, 7)]
    raw = yaml.safe_load("\n".join([*lines, "evaluate: {bomb: *m6}"]))
    with pytest.raises(
        UserError, match=r"unknown key evaluate\.bomb \(= \{\"k0\": \{.*\.\.\.\}\)"
    ) as e:
        params_mod.validate({"evaluate": raw["evaluate"]})
    assert len(str(e.value)) < 1000 and "\n" not in str(e.value)


def test_a_key_that_is_a_list_of_aliases_is_shown_short() -> None:
    """pydantic writes a key into its error whole: a list as a key of 10,000 aliases of 20 kB."""
    text = f'data:\n  ? [&s "{"A" * 20_000}", {", ".join(["*s"] * 10_000)}]\n  : 1\n'
    with pytest.raises(UserError, match=r"a key that is not text \(\[\"AAA") as e:
        params_mod.validate(params_mod.parse(text))
    assert len(str(e.value)) < 1000


# YAML 1.1 (PyYAML) and YAML 1.2 (ruamel, DVC) read these differently
YAML_1_1_VS_1_2 = [
    "010",
    "0o10",
    "0x1F",
    "1_000",
    "1e-3",
    "yes",
    "on",
    "off",
    "20:00",
    "~",
    "!!str 1",
]


@pytest.mark.parametrize("value", YAML_1_1_VS_1_2)
def test_params_are_read_as_dvc_reads_them(value: str) -> None:
    """The stage's value is the one `dvc exp show` and dvc.lock record."""
    from dvc.utils.serialize import parse_yaml

    text = f"train:\n  seed: {value}\n"
    assert params_mod.parse(text) == parse_yaml(text, "params.yaml")


def test_a_seed_of_010_trains_with_seed_10(done: Path, tmp_path: Path) -> None:
    """YAML 1.1 would read 010 as octal 8, while dvc records 10."""
    models = []
    for seed in ("010", "10"):
        project = tmp_path / seed
        shutil.copytree(done, project, symlinks=True)
        text = (project / "params.yaml").read_text().replace("seed: 42", f"seed: {seed}")
        (project / "params.yaml").write_text(text)
        assert run_stage(project, "train").returncode == 0
        models.append((project / "models" / "model.safetensors").read_bytes())
    assert models[0] == models[1]


@pytest.mark.parametrize("edited", ["params.yaml", "src/code.py"])
def test_params_or_code_edited_while_the_stage_runs_fail_it(
    done: Path, tmp_path: Path, edited: str
) -> None:
    """DVC reads params.yaml and hashes a stage's deps again after the stage, for dvc.lock: an
    edit meanwhile would be recorded beside a model trained without it, and `dvc status` would
    call it done. Every output stays as it was."""
    project = tmp_path / "p"
    shutil.copytree(done, project, symlinks=True)
    (project / "src").mkdir()
    (project / "src" / "code.py").write_text("x = 1\n")
    (project / "dvc.yaml").write_text("stages:\n  train:\n    deps: [src, data/tensors]\n")
    before = _all_but_the_edits(project)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: 400"))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py")],
        cwd=project,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        while "epoch 1/400" not in (line := proc.stderr.readline()):
            assert line, "the stage ended before its first epoch"
        text = (project / edited).read_text()
        (project / edited).write_text(text.replace("epochs: 400", "epochs: 3") + "# edited\n")
        rest = proc.stderr.read()
        proc.wait(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 2, rest
    assert rest.strip().splitlines()[-1] == (
        f"train: error: {edited} changed while the stage ran: dvc.lock would record it beside "
        "outputs made without it, so no output was replaced; run it again"
    )
    assert _all_but_the_edits(project) == before  # the last good outputs, and no temporary


def test_a_dep_edited_before_the_stage_took_its_stamps_fails_it(done: Path, tmp_path: Path) -> None:
    """The stage reads its code while it imports, before it can stamp its deps. A dep replaced in
    that moment, even by a tool that keeps the old mtime (`cp -p`, `rsync -a`), has a ctime later
    than the stage's start."""
    project = tmp_path / "p"
    shutil.copytree(done, project, symlinks=True)
    (project / "dvc.yaml").write_text("stages:\n  tensorize:\n    deps: [code.py]\n")
    (project / "code.py").write_text("x = 1\n")
    before = _all_but_the_edits(project)
    edit_then_run = f"""
import os, runpy, sys
import mnist_basics.stage  # the stage's clock starts, as stages/_checkout.py makes it
old = os.stat("code.py")
open("code.py", "w").write("x = 2\\n")
os.utime("code.py", ns=(old.st_atime_ns, old.st_mtime_ns))  # as cp -p leaves it
sys.path.insert(0, {str(ROOT / "stages")!r})
runpy.run_path({str(ROOT / "stages" / "tensorize.py")!r}, run_name="__main__")
"""
    r = subprocess.run(
        [sys.executable, "-c", edit_then_run], cwd=project, capture_output=True, text=True
    )
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("tensorize: error: code.py changed while the stage ran")
    )
    assert _all_but_the_edits(project) == before


def test_a_link_to_a_dep_made_while_the_stage_runs_is_no_edit(done: Path, tmp_path: Path) -> None:
    """With DVC's hardlink cache a dep shares its inode with the cache, whose ctime moves
    whenever another checkout links or unlinks it: no byte changed, the run stands."""
    project = tmp_path / "p"
    shutil.copytree(done, project, symlinks=True)
    (project / "dvc.yaml").write_text("stages:\n  tensorize:\n    deps: [code.py]\n")
    (project / "code.py").write_text("x = 1\n")
    os.link(project / "code.py", tmp_path / "cache-copy")
    link_then_run = f"""
import os, runpy, sys, time
import mnist_basics.stage
time.sleep(0.05)  # past the coarse clock that stamps a file's ctime
os.link("code.py", {str(tmp_path / "another-checkout")!r})
sys.path.insert(0, {str(ROOT / "stages")!r})
runpy.run_path({str(ROOT / "stages" / "tensorize.py")!r}, run_name="__main__")
"""
    r = subprocess.run(
        [sys.executable, "-c", link_then_run], cwd=project, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def _all_but_the_edits(project: Path) -> dict[Path, bytes]:
    edits = ("params.yaml", "code.py")
    return {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and p.name not in edits}


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.symlink_to("/dev/zero"), ["params.yaml", "not a regular file"]),
        (lambda p: os.mkfifo(p), ["params.yaml", "not a regular file"]),
        (lambda p: p.write_text("# x\n" * 300_000), ["params.yaml", "more than 1,048,576 bytes"]),
        (lambda p: p.write_bytes(b"train: {model: \xff}\n"), ["params.yaml", "not UTF-8"]),
    ],
    ids=["dev-zero", "fifo", "huge", "not-utf8"],
)
def test_a_params_file_that_is_no_text_file_is_one_line(
    tmp_path: Path, make, words: list[str]
) -> None:
    make(tmp_path / "params.yaml")
    r = run_stage(tmp_path, "download", timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and all(w in r.stderr for w in words), r.stderr


def test_every_schema_key_is_in_params_yaml_and_back(project_root: Path) -> None:
    """params.yaml states every key with its default value, so `dvc exp show` shows them all."""
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    assert raw == params_mod.defaults()


def test_docs_params_reference_matches_the_schema(project_root: Path) -> None:
    doc = project_root / "docs" / "params.md"
    start, end = "<!-- params:start -->", "<!-- params:end -->"
    text = doc.read_text() if doc.exists() else ""
    if start not in text or end not in text:
        pytest.skip(f"docs/params.md has no {start} ... {end} block")
    block = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert block == params_mod.markdown_table(), (
        "docs/params.md's params table is stale: regenerate it with `python -m mnist_basics.params`"
    )


def test_markdown_table_names_every_key() -> None:
    table = params_mod.markdown_table()
    for sec, keys in params_mod.defaults().items():
        for k in keys:
            assert f"| `{sec}.{k}` |" in table
    out = subprocess.run(
        [sys.executable, "-m", "mnist_basics.params"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == table


def test_a_bound_is_shown_as_the_number_it_is() -> None:
    """4294967296 was "not < 4.29497e+09", which reads as false of the number shown."""
    with pytest.raises(UserError) as e:
        params_mod.validate({"train": {"seed": 4294967296}})
    assert "train.seed = 4294967296 is invalid (not < 4,294,967,296)" in str(e.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: 1\rb: x\x1by", "line 2, column 5"),  # a lone CR ends a line for YAML
        ("a: \u00e9\u2028b: x\x1by", "line 2, column 5"),  # so do NEL, U+2028 and U+2029
        ("a: 1\r\nb: x\x1by", "line 2, column 5"),
        ("\ufeffb: x\x1by", "line 1, column 5"),  # a BOM is no column
        ("# \u65e5\u672c\nb: x\x1by", "line 2, column 5"),  # ruamel's position is of bytes
    ],
)
def test_a_control_characters_line_and_column_are_yamls(text: str, where: str) -> None:
    with pytest.raises(params_mod.UserError, match=f"not valid YAML: {where}: unacceptable"):
        params_mod.parse(text)
