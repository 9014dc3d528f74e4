"""The pipeline's budgets, timed as whole processes beside a like-for-like reference.

    python bench/run.py                       # every work, 5 runs each, writes bench/RESULTS.md
    python bench/run.py --runs 3 --only exp_run,noop_repro --keep

One table (WORKS) and one loop. Each work has a name, a prepare step (untimed, before every
run), our command and the reference's command (or none: an absolute target). A command is a list
of argv lists run one after the other; its time is their summed wall time and its memory the
largest max RSS of any of them (os.wait4: the process and its waited-for descendants). Ours and
the reference alternate, `--runs` times each; the table gives medians and min-max.

The scratch projects are git clones of this repo's HEAD (commit first: uncommitted edits are not
measured) with `data.sources` set to `--mnist` (the real IDX files), one `dvc repro`, committed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
BOOK = str(BENCH / "book_style.py")
TEN = "[0,1,2,3,4,5,6,7,8,9]"
# README's recipes, as `dvc exp run -S` flags
CNN = [
    f"train.{kv}"
    for kv in (
        "model=cnn",
        "optimizer=adam",
        "lr=0.01",
        "shuffle=true",
        "schedule=one_cycle",
        "threads=2",
    )
]
CNN37 = [*CNN, "train.epochs=6"]
CNN10 = [
    *CNN,
    "train.epochs=6",
    "train.lr=0.02",
    "train.loss_func=cross_entropy",
    "train.shift=1",
    "train.label_smoothing=0.1",
    "train.weight_decay=0.0001",
    f"data.digits={TEN}",
]
# README's other recipes: (row, project, flags), timed once each, no reference
OTHER_RECIPES = [
    ("simple_net_recipe", "proj", ["train.model=simple_net", "train.lr=0.1", "train.epochs=40"]),
    ("linear_recipe", "proj", ["train.init_std=0.01", "train.epochs=40"]),
    (
        "linear10_recipe",
        "ten",
        ["train.init_std=0.01", "train.optimizer=adam", "train.lr=0.001", "train.shuffle=true"],
    ),
    (
        "mlp10_recipe",
        "ten",
        [
            "train.model=simple_net",
            "train.hidden=256",
            "train.optimizer=adam",
            "train.lr=0.001",
            "train.shuffle=true",
        ],
    ),
]
GIT_ID = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(PY).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("PYTHONPATH", None)  # each stage finds its checkout's src/ (stages/_checkout.py)
    return e


def sh(cmd: list[str], cwd: Path, check: bool = True) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} in {cwd}: rc {r.returncode}\n{r.stdout}{r.stderr}")
    return r.stdout


def timed(cmds: list[list[str]], cwd: Path) -> tuple[float, float]:
    """Wall seconds (sum) and max RSS MB (largest) of cmds run in turn, as /usr/bin/time does."""
    wall, rss = 0.0, 0.0
    for cmd in cmds:
        with open(os.devnull, "wb") as null:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=null, stderr=subprocess.PIPE)
            err = p.stderr.read() if p.stderr else b""
            _, status, ru = os.wait4(p.pid, 0)
            wall += time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            raise RuntimeError(
                f"{' '.join(cmd)} in {cwd}: rc {p.returncode}\n{err.decode()[-2000:]}"
            )
        rss = max(rss, ru.ru_maxrss / 1024)  # KiB on Linux
    return wall, rss


# --- scratch projects ---------------------------------------------------------------------------


def set_sources(project: Path, mnist: Path) -> None:
    p = project / "params.yaml"
    text, n = re.subn(r"(?m)^(\s+sources:)\s*[^#\n]*", rf"\1 [{mnist}]   ", p.read_text(), count=1)
    assert n == 1, "params.yaml: no data.sources"
    p.write_text(text)


def commit(project: Path, msg: str) -> None:
    sh(["git", "add", "-A"], project)
    sh([*GIT_ID, "commit", "-qm", msg], project)


def reset(project: Path) -> None:
    """Back to the committed params and outputs (after an experiment left its own)."""
    sh(["git", "reset", "-q", "--hard"], project)
    sh(["dvc", "checkout", "-f", "-q"], project, check=False)


class Scratch:
    def __init__(self, root: Path, mnist: Path) -> None:
        self.root = root
        self.base = root / "base"  # HEAD, sources = the IDX folder, no outputs
        self.proj = root / "proj"  # base after one dvc repro, committed
        self.nopersist = root / "nopersist"  # proj with dvc.yaml without `persist: true`
        self.allcached = root / "allcached"  # and without `cache: false` on outs either
        self.cold = root / "cold"  # a fresh clone of base, before each cold repro
        self.tree = root / "tree"  # data/raw.zip extracted: the book's PNG tree
        self.tgz = root / "mnist_sample.tgz"
        self.trivial = root / "trivial"  # a one-stage DVC project: DVC's own no-op floor
        self.ten = root / "ten"  # base with all ten digits, one dvc repro, committed
        if not self.base.exists():
            sh(["git", "clone", "-q", str(REPO), str(self.base)], root)
            set_sources(self.base, mnist)
            commit(self.base, "bench: data from the local IDX folder")
        variants = (
            (self.proj, None),
            (self.ten, self._ten_digits),
            (self.nopersist, lambda p: self._edit_outs(p, False)),
            (self.allcached, lambda p: self._edit_outs(p, True)),
        )
        for proj, edit in variants:
            if not (proj / ".git").exists() or not sh(["git", "ls-files", "dvc.lock"], proj):
                shutil.rmtree(proj, ignore_errors=True)
                sh(["git", "clone", "-q", str(self.base), str(proj)], root)
                if edit:
                    edit(proj)
                sh(["dvc", "repro", "-q"], proj)
                commit(proj, "bench: first repro")
        if not self.tree.exists():
            with zipfile.ZipFile(self.proj / "data" / "raw.zip") as zf:
                zf.extractall(self.tree)  # noqa: S202  (our own zip)
        if not (self.trivial / "dvc.lock").exists():
            shutil.rmtree(self.trivial, ignore_errors=True)
            self.trivial.mkdir()
            (self.trivial / "a").write_text("a\n")
            for cmd in (
                ["git", "init", "-q"],
                ["dvc", "init", "-q"],
                ["dvc", "stage", "add", "-q", "-n", "copy", "-d", "a", "-o", "b", "cp a b"],
                ["dvc", "repro", "-q"],
            ):
                sh(cmd, self.trivial)
            commit(self.trivial, "bench: one stage")
        if not self.tgz.exists():  # untimed build: what fast.ai's untar_data downloads
            with tarfile.open(self.tgz, "w:gz") as tf:
                tf.add(self.tree / "mnist_sample", arcname="mnist_sample")

    @staticmethod
    def _edit_outs(proj: Path, cache_all: bool) -> None:
        """dvc.yaml without `persist: true`; with cache_all, `outs` without `cache: false` too
        (DVC 3.67 saves no run-cache entry for a stage with an uncached out that is neither
        a metric nor a plot: stage/__init__.py, Stage.run)."""
        import yaml

        y = proj / "dvc.yaml"
        d = yaml.safe_load(y.read_text())
        for st in d["stages"].values():
            for kind in ("outs", "metrics"):
                for i, o in enumerate(st.get(kind, [])):
                    if isinstance(o, dict):
                        ((path, opts),) = o.items()
                        opts.pop("persist", None)
                        if cache_all and kind == "outs" and opts.pop("cache", True) is False:
                            sh(["git", "rm", "-rq", "--cached", path], proj, check=False)
                        st[kind][i] = {path: opts} if opts else path
        y.write_text(yaml.safe_dump(d, sort_keys=False))

    @staticmethod
    def _ten_digits(proj: Path) -> None:
        """params.yaml for all ten digits, so a ten-digit recipe finds its data stages done."""
        import yaml

        y = proj / "params.yaml"
        d = yaml.safe_load(y.read_text())
        d["data"]["digits"] = list(range(10))
        d["train"]["loss_func"] = "cross_entropy"
        y.write_text(yaml.safe_dump(d, sort_keys=False))

    def fresh_cold(self) -> None:
        shutil.rmtree(self.cold, ignore_errors=True)
        shutil.rmtree(self.root / "untar", ignore_errors=True)
        sh(["git", "clone", "-q", str(self.base), str(self.cold)], self.root)
        (self.root / "untar").mkdir()

    def after_lr05(self, proj: Path) -> None:
        reset(proj)
        sh(["dvc", "exp", "run", "-q", "-S", "train.lr=0.5"], proj)


# --- the works ----------------------------------------------------------------------------------


@dataclass
class Work:
    name: str  # the row
    cwd: str  # attribute of Scratch: the project it runs in
    prepare: object  # callable(Scratch), untimed, before each run of either side
    ours: list[list[str]]
    ref: list[list[str]] | None  # None: an absolute target
    target: str  # "ratio<=X" or "abs<X" or "-"
    note: str = ""
    accuracy: bool = False  # report metrics/evaluate.json's accuracy after each run


def works(s: Scratch) -> list[Work]:
    tree = str(s.tree / "mnist_sample")
    torch_import = [PY, "-c", "import torch"]
    book_lin = [PY, BOOK, tree, "--models", "linear"]  # tensorize, pixel similarity, linear
    exp05 = ["dvc", "exp", "run", "-q", "-S", "train.lr=0.5"]
    exp10 = ["dvc", "exp", "run", "-q", "-S", "train.lr=1.0"]
    proj_reset = lambda s: reset(s.proj)  # noqa: E731
    ten_reset = lambda s: reset(s.ten)  # noqa: E731

    def recipe(flags: list[str], kernels: str) -> list[list[str]]:
        sets = [x for kv in [*flags, f"train.kernels={kernels}"] for x in ("-S", kv)]
        return [["dvc", "exp", "run", "-q", *sets]]

    others = [
        Work(
            name,
            cwd,
            ten_reset if cwd == "ten" else proj_reset,
            [["dvc", "exp", "run", "-q", *(x for kv in flags for x in ("-S", kv))]],
            None,
            "-",
            "README's recipe: " + " ".join(f"-S {kv}" for kv in flags),
            accuracy=True,
        )
        for name, cwd, flags in OTHER_RECIPES
    ]
    return [
        *others,
        Work(
            "cnn37_recipe",
            "proj",
            proj_reset,
            recipe(CNN37, "native"),
            recipe(CNN37, "portable"),
            "abs<20",
            "README's 3-vs-7 CNN recipe (train.kernels=native); ref = the same with portable",
            accuracy=True,
        ),
        Work(
            "cnn10_recipe",
            "ten",
            ten_reset,
            recipe(CNN10, "native"),
            recipe(CNN10, "portable"),
            "abs<60",
            "README's ten-digit CNN recipe, data stages done (train.kernels=native); ref = the "
            "same with portable",
            accuracy=True,
        ),
        Work(
            "exp_run",
            "proj",
            proj_reset,
            [exp05],
            [["dvc", "exp", "run", "-q"], torch_import],
            "ratio<=1.25",
            "ref = floor: `dvc exp run` with nothing to run + `import torch`",
        ),
        Work(
            "exp_run_same_flags",
            "proj",
            proj_reset,
            [exp05],
            [["dvc", "exp", "run", "-q", "-S", "train.lr=1.0"], torch_import],
            "-",
            "ref = the same `-S` with the value params.yaml has: nothing to run, but DVC parses it "
            "(hydra) and rewrites params.yaml, as for ours; + `import torch`",
        ),
        Work(
            "exp_run_vs_book",
            "proj",
            proj_reset,
            [exp05],
            [book_lin],
            "-",
            "ref = book_style.py TREE --models linear (tensorize, pixel similarity, linear)",
        ),
        Work(
            "cold_repro",
            "cold",
            Scratch.fresh_cold,
            [["dvc", "repro", "-q"]],
            [["tar", "xzf", str(s.tgz), "-C", str(s.root / "untar")], book_lin],
            "ratio<=2",
            "ref = tar xzf mnist_sample.tgz + book_style.py TREE --models linear",
        ),
        Work(
            "noop_repro",
            "proj",
            proj_reset,
            [["dvc", "repro", "-q"]],
            [["dvc", "--cd", str(s.trivial), "repro", "-q"]],
            "abs<1",
            "ref = DVC's floor: no-op `dvc repro` of a one-stage project (`cp a b`)",
        ),
        Work(
            "persist_rerun",
            "proj",
            lambda s: s.after_lr05(s.proj),
            [exp10],
            None,
            "-",
            "after lr=0.5, back to lr=1.0: persist disables the run-cache, train re-runs",
        ),
        Work(
            "nopersist_rerun",
            "nopersist",
            lambda s: s.after_lr05(s.nopersist),
            [exp10],
            None,
            "-",
            "the same, dvc.yaml without persist (cache: false outs still block the run-cache)",
        ),
        Work(
            "allcached_rerun",
            "allcached",
            lambda s: s.after_lr05(s.allcached),
            [exp10],
            None,
            "-",
            "the same, dvc.yaml without persist and without `cache: false` outs: run-cache",
        ),
        Work(
            "train_stage",
            "proj",
            proj_reset,
            [[PY, "stages/train.py"]],
            [[PY, BOOK, "--tensors", "data/tensors", "--phase", "linear"]],
            "-",
            "ref = book_style.py --tensors data/tensors --phase linear",
        ),
        Work(
            "tensorize_stage",
            "proj",
            proj_reset,
            [[PY, "stages/tensorize.py"]],
            [[PY, BOOK, tree, "--phase", "tensorize"]],
            "-",
            "ref = book_style.py TREE --phase tensorize (14,434 PNGs)",
        ),
    ]


# --- the loop and the table ---------------------------------------------------------------------


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def row(w: Work, ours: list[tuple], ref: list[tuple]) -> str:
    ow = [t for t, _, _ in ours]
    mo = statistics.median(ow)
    rss = f"{max(m for _, m, _ in ours):.0f}"
    ratio, met, rs = "-", "-", "-"
    if ref:
        rw = [t for t, _, _ in ref]
        ratio_v = mo / statistics.median(rw)
        ratio, rs = f"{ratio_v:.2f}x", fmt(rw)
        rss += f" / {max(m for _, m, _ in ref):.0f}"
        if w.target.startswith("ratio<="):
            met = "yes" if ratio_v <= float(w.target[7:]) else "no"
    if w.target.startswith("abs<"):
        met = "yes" if mo < float(w.target[4:]) else "no"
    target = {"-": "-"}.get(
        w.target,
        w.target.replace("ratio<=", "ours/ref <= ").replace("abs<", "< ")
        + ("x" if "ratio" in w.target else ""),
    )
    if w.target.startswith("abs<"):
        target += " s"
    note = w.note
    if w.accuracy:
        note += "; accuracy ours " + ", ".join(sorted({f"{a:.4f}" for _, _, a in ours}))
        if ref:
            note += ", ref " + ", ".join(sorted({f"{a:.4f}" for _, _, a in ref}))
    return f"| {w.name} | {fmt(ow)} | {rs} | {ratio} | {target} | {met} | {rss} | {note} |"


def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    torch_v = sh([PY, "-c", "import torch; print(torch.__version__)"], REPO).strip()
    return (
        f"machine: nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, "
        f"torch {torch_v}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", help="comma-separated work names")
    ap.add_argument("--mnist", type=Path, default=REPO.parent / "shared/data/mnist")
    ap.add_argument("--root", type=Path, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--write", type=Path, default=BENCH / "RESULTS.md")
    a = ap.parse_args()
    if not a.mnist.is_dir():
        ap.error(f"no MNIST IDX folder at {a.mnist} (give --mnist)")
    root = a.root or Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    head = sh(["git", "rev-parse", "--short", "HEAD"], REPO).strip()
    load0 = machine()
    try:
        s = Scratch(root, a.mnist.resolve())
        todo = [w for w in works(s) if not a.only or w.name in a.only.split(",")]
        lines = []
        for w in todo:
            ours, ref = [], []
            for i in range(a.runs):
                for side, cmds, acc in (("ours", w.ours, ours), ("ref", w.ref, ref)):
                    if cmds is None:
                        continue
                    w.prepare(s)
                    cwd = getattr(s, w.cwd)
                    t, rss = timed(cmds, cwd)
                    metrics = cwd / "metrics" / "evaluate.json"
                    accuracy = json.loads(metrics.read_text())["accuracy"] if w.accuracy else None
                    acc.append((t, rss, accuracy))
                    print(f"{w.name} {side} {i + 1}/{a.runs}: {acc[-1][0]:.2f} s", flush=True)
            lines.append(row(w, ours, ref))
            print(lines[-1], flush=True)
    finally:
        if not a.keep and a.root is None:
            shutil.rmtree(root, ignore_errors=True)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            f"commit {head}, {a.runs} runs per side (median, min-max in parentheses), {now}",
            "",
            load0 + " (before); " + machine().split(", load average ")[1] + " (after)",
            "",
            "| work | ours s | ref s | ours/ref | target | met? | max RSS MB ours / ref | notes |",
            "|---|---|---|---|---|---|---|---|",
            *lines,
            "",
        ]
    )
    a.write.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
