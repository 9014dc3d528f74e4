"""A real pdb breakpoint in the book's training loop stops during a default `dvc repro`.

README promises that a reader can put a debugger breakpoint in `Learner.calc_grad` (or the
book's BasicOptim, mnist_loss, validate_epoch, batch_accuracy) and have it stop while DVC runs
the pipeline. tests/test_learner.py checks what calc_grad computes, not that the code DVC runs is
the code a breakpoint is set in: a stage that ran an installed copy of the library, or a train
loop that bypassed calc_grad, would pass it. Here Python's own pdb runs inside the train stage
that a real `dvc repro` starts, driven by a script of commands instead of a keyboard.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from dvc_fixtures import DvcProject

pytestmark = pytest.mark.e2e

# Started by site.py in every python that has this folder on PYTHONPATH (dvc's own too), it
# enters pdb only in the train stage's process. The log is line-buffered: the stage ends with
# os._exit, which flushes nothing. When the command script runs out, pdb reads EOF and quits
# the program, so a breakpoint that stops without its commands cannot wait on a keyboard.
SITECUSTOMIZE = """\
import sys

if sys.argv and sys.argv[0].replace("\\\\", "/").endswith("stages/train.py"):
    import io
    import os
    import pdb

    _log = open({log!r}, "a", buffering=1, encoding="utf-8")
    _log.write(f"pdb in pid {{os.getpid()}}, argv {{sys.argv!r}}\\n")
    with open({commands!r}, encoding="utf-8") as _f:
        _commands = io.StringIO(_f.read())
    pdb.Pdb(stdin=_commands, stdout=_log, readrc=False, nosigint=True).set_trace()
"""
PROMPTS = re.compile(r"^(?:\((?:Pdb|com)\) )+")  # not followed by a newline: no one types
STACK_ENTRY = re.compile(r"^[> ] (?P<file>.+)\((?P<line>\d+)\)(?P<func>[^()\s]+)\(\)")


@dataclass(frozen=True)
class Target:
    """A function to break in, what to print when it stops, and the calls that must lead to it."""

    name: str
    file: str  # under the project's src/mnist_basics/
    qualname: str
    expr: str  # evaluated in the stopped frame, at the function's first statement
    expected: tuple
    chain: tuple[str, ...]  # the project's frames from `fit` down to the function

    @property
    def func(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]


TARGETS = (
    Target(
        "calc_grad",
        "learner.py",
        "Learner.calc_grad",
        "(type(self.model).__name__, self.loss_func.__name__, type(self.opt).__name__)",
        ("Linear1", "mnist_loss", "BasicOptim"),
        ("fit", "train_epoch", "calc_grad"),
    ),
    Target(
        "mnist_loss",
        "models.py",
        "mnist_loss",
        "(tuple(predictions.shape), predictions.requires_grad)",
        ((80, 1), True),  # the training batch, on its way to loss.backward()
        ("fit", "train_epoch", "calc_grad", "mnist_loss"),
    ),
    Target(
        "step",
        "optim.py",
        "BasicOptim.step",
        "(type(self).__name__, self.lr, all(q.grad is not None for q in self.params))",
        ("BasicOptim", 1.0, True),  # calc_grad's backward has filled every grad
        ("fit", "train_epoch", "step"),
    ),
    Target(
        "validate_epoch",
        "learner.py",
        "Learner.validate_epoch",
        "(type(self).__name__, len(self.valid_x))",
        ("Learner", 24),
        ("fit", "validate_epoch"),
    ),
    Target(
        "batch_accuracy",
        "models.py",
        "batch_accuracy",
        "(tuple(xb.shape), xb.requires_grad)",
        ((24, 1), False),  # the valid logits, computed under no_grad
        ("fit", "validate_epoch", "accuracy", "batch_accuracy"),
    ),
)


def first_statement(path: Path, qualname: str) -> int:
    """Line of the first statement of `qualname`'s body, past its docstring: where a reader
    would put the breakpoint (the `def` line runs at import, a decorator's line earlier)."""
    body = ast.parse(path.read_text()).body
    for part in qualname.split("."):
        kinds = ast.FunctionDef | ast.ClassDef
        body = next(n for n in body if isinstance(n, kinds) and n.name == part).body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(body) > 1:
        first = body[1]
    return first.lineno


def pdb_script(src: Path) -> str:
    """pdb commands: a breakpoint per target, each with commands that print what stopped (a
    tagged tuple, then the stack), clear that breakpoint and continue; then run the stage."""
    lines = []
    for number, t in enumerate(TARGETS, start=1):
        where = src / t.file
        lines += [
            f"break {where}:{first_statement(where, t.qualname)}",
            "commands",
            f"p ('HIT', {t.name!r}, __import__('os').getpid(), {t.expr})",
            "where",
            f"p ('END', {t.name!r})",
            f"clear {number}",
            "continue",  # ends the command list too
        ]
    return "\n".join([*lines, "continue", ""])


@dataclass
class Stop:
    """One breakpoint's stop as the log shows it."""

    pid: int
    value: object
    frames: list[tuple[str, str]]  # (file, function), outermost first


def read_stops(log: str) -> dict[str, Stop]:
    """The stops in pdb's log, by target name: each from its HIT line to its END line."""
    stops: dict[str, Stop] = {}
    current: Stop | None = None
    for line in log.splitlines():
        line = PROMPTS.sub("", line)
        try:
            tagged = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            tagged = None
        if isinstance(tagged, tuple) and tagged[:1] == ("HIT",):
            current = stops[tagged[1]] = Stop(tagged[2], tagged[3], [])
        elif isinstance(tagged, tuple) and tagged[:1] == ("END",):
            current = None
        elif current is not None and (m := STACK_ENTRY.match(line)):
            current.frames.append((m["file"], m["func"]))
    return stops


@pytest.mark.timeout(300)
def test_pdb_breakpoints_stop_in_the_train_stage_of_dvc_repro(
    dvc_project_factory, synthetic_37: Path, tmp_path: Path
) -> None:
    proj: DvcProject = dvc_project_factory([str(synthetic_37)], epochs=2)
    root = proj.path.resolve()
    src = root / "src" / "mnist_basics"
    site = tmp_path / "site"
    site.mkdir()
    log, commands = tmp_path / "pdb.log", site / "pdb_commands.txt"
    commands.write_text(pdb_script(src))
    (site / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(log=str(log), commands=str(commands))
    )
    inherited = proj.env.get("PYTHONPATH")
    proj.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), inherited) if p)

    r = proj.dvc("repro", timeout=240, check=False)

    text = log.read_text() if log.exists() else "(no pdb log)"
    shown = f"\n--- pdb log ---\n{text}\n--- dvc ---\n{r.stdout}\n{r.stderr}"
    assert r.returncode == 0, f"dvc repro exited {r.returncode}{shown}"
    assert "Running stage 'train'" in r.stdout + r.stderr, shown
    started = re.findall(r"^pdb in pid (\d+), argv \['stages/train.py'\]$", text, re.M)
    assert len(started) == 1, f"pdb should start once, in the train stage{shown}"
    stage_pid = int(started[0])
    assert stage_pid != os.getpid()

    stops = read_stops(text)
    for t in TARGETS:
        assert t.name in stops, f"the breakpoint in {t.qualname} never stopped{shown}"
        stop = stops[t.name]
        assert stop.pid == stage_pid, f"{t.name} stopped in another process{shown}"
        assert stop.value == t.expected, f"{t.name}: {stop.value!r} != {t.expected!r}{shown}"
        ours = [(Path(f), fn) for f, fn in stop.frames if Path(f).is_relative_to(root)]
        assert ours, f"{t.name}: no stack{shown}"
        assert ours[0] == (root / "stages" / "train.py", "<module>"), f"{t.name}{shown}"
        assert ours[-1] == (src / t.file, t.func), f"{t.name}{shown}"
        names = [fn for _, fn in ours]
        assert "fit" in names, f"{t.name}: not called from Learner.fit{shown}"
        assert tuple(names[names.index("fit") :]) == t.chain, f"{t.name}{shown}"
    assert text.count("Deleted breakpoint") == len(TARGETS), shown

    # The stage still did its work under the debugger.
    lock = (root / "dvc.lock").read_text()
    assert "train:" in lock and "models/model.safetensors" in lock
    assert (root / "models" / "model.safetensors").stat().st_size > 0
    assert proj.json("metrics/train/metrics.json")["step"] == 2
