"""The pipeline's performance beside the book's code path, as one markdown table.

    python bench/run.py                         # everything, 5 runs each (about 15 min on 2 cores)
    python bench/run.py --runs 7 --only tensorize,loop_linear
    python bench/run.py --mnist ../shared/data/mnist --keep --write bench/RESULTS.md
    python bench/run.py --profile               # pyinstrument each stage once -> bench/profiles/

Not part of the test suite. Everything runs in a scratch folder (a git clone of this repo whose
params.yaml takes data from the local IDX folder): nothing here touches the work tree but
bench/. Each figure is the median of --runs runs; ours and the book-style reference
(bench/book_style.py) are measured alternately in the same run, on the same data. Whole
processes are timed by wall clock; peak memory is the largest single process's max RSS
(os.wait4) and, sampled every 50 ms, the whole process tree's PSS (workers and dvc's children
included, shared pages counted once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BOOK = BENCH / "book_style.py"
PY = sys.executable
VENV_BIN = str(Path(PY).parent)
WORKS = (
    "tensorize",
    "train_linear",
    "loop_linear",
    "train_simple_net",
    "loop_simple_net",
    "exp_run",
    "noop_repro",
    "cold_repro",
    "tensorize10",
    "stages",
)


# --- measuring one process ------------------------------------------------------------------


def _tree_pss_kb(pid: int) -> int:
    """PSS of pid and all its descendants, in kB (0 for processes gone meanwhile)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


@dataclass
class Sample:
    seconds: float
    rss_mb: float  # largest single process in the tree (wait4's ru_maxrss)
    pss_mb: float  # sampled peak of the whole tree
    out: str = ""


def measure(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> Sample:
    """Run cmd to the end: wall time, peak memory, stdout+stderr."""
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _tree_pss_kb(p.pid))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        th.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().decode(errors="replace")
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {cwd} exited {p.returncode}:\n{out[-3000:]}")
    return Sample(seconds, ru.ru_maxrss / 1024, peak[0] / 1024, out)


def env_for(project: Path) -> dict:
    """The project's own src first (not the editable install's work tree), the venv on PATH."""
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(project / "src")
    env.pop("VIRTUAL_ENV", None)
    return env


def sh(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {cwd} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r.stdout


# --- the scratch projects ---------------------------------------------------------------------


def set_param(project: Path, key: str, value: str) -> None:
    """Replace one `  key: ...` line of params.yaml (keeps the comments)."""
    p = project / "params.yaml"
    text, n = re.subn(rf"(?m)^(\s+{key}:)\s*[^#\n]*", rf"\1 {value}   ", p.read_text(), count=1)
    if n != 1:
        raise RuntimeError(f"params.yaml: no {key}")
    p.write_text(text)


def git_commit(project: Path, msg: str, *files: str) -> None:
    sh(["git", "add", "--", *files], project)
    sh(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", msg],
        project,
    )


def unzip(archive: Path, dest: Path) -> Path:
    """The download stage's zip extracted to dest (once, untimed): the book reads a PNG tree,
    one Image.open per file, as fast.ai's untar_data leaves it."""
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        tmp.rename(dest)
    return dest


@dataclass
class Scratch:
    root: Path
    mnist: Path
    base: Path = field(init=False)  # clone, params from the local IDX folder, no outputs
    proj: Path = field(init=False)  # base after one dvc repro, dvc.lock committed
    stages: Path = field(init=False)  # a copy of proj where stage commands run by hand
    tree: Path = field(init=False)  # the 3s and 7s PNG tree, unzipped from proj's data/raw.zip

    def __post_init__(self) -> None:
        self.base = self.root / "base"
        self.proj = self.root / "proj"
        self.stages = self.root / "stages"

    def clone(self, dest: Path, src: Path | None = None) -> Path:
        sh(["git", "clone", "-q", str(src or self.base), str(dest)], self.root)
        return dest

    def setup(self) -> None:
        if not self.base.exists():
            sh(["git", "clone", "-q", str(REPO), str(self.base)], self.root)
            set_param(self.base, "sources", f"[{self.mnist}]")
            git_commit(self.base, "bench: data from the local IDX folder", "params.yaml")
        if not (self.proj / "dvc.lock").exists():
            shutil.rmtree(self.proj, ignore_errors=True)
            self.clone(self.proj)
            sh(["dvc", "repro", "-q"], self.proj, env_for(self.proj))
            ignores = sh(
                ["git", "ls-files", "-o", "--exclude-standard", "--", "*.gitignore"], self.proj
            ).split()
            git_commit(self.proj, "bench: first repro", "dvc.lock", *ignores)
        if not self.stages.exists():
            shutil.copytree(self.proj, self.stages, symlinks=True)
        self.tree = unzip(self.proj / "data" / "raw.zip", self.root / "tree") / "mnist_sample"


# --- the in-process training loops ------------------------------------------------------------


def loop_once(model: str, which: str) -> dict:
    """Run in a fresh child process in a project folder: one Learner.fit (ours) or one book
    DataLoader loop on the same tensors; its time and final accuracy. One run per process, as
    the train stage does, so neither side inherits the other's threads or caches."""
    import torch

    sys.path.insert(0, str(BENCH))
    import book_style as book
    from mnist_basics.device import cpu_threads

    from mnist_basics.data import class_targets, load_split
    from mnist_basics.learner import Learner
    from mnist_basics.models import ModelSpec, build_model, mnist_loss, targets_for
    from mnist_basics.optim import BasicOptim
    from mnist_basics.params import BOOK_EPOCHS, BOOK_LR
    from mnist_basics.train import seed_everything

    tensors = Path("data/tensors")
    spec = ModelSpec(model=model, digits=(3, 7), loss="mnist_loss")
    lr, epochs = BOOK_LR[model], BOOK_EPOCHS[model]
    if which == "book":  # torch's default threads, as the chapter runs
        dset, valid_dset = book.datasets(
            book.read_tensors(tensors, "train", [3, 7]), book.read_tensors(tensors, "valid", [3, 7])
        )
        t0 = time.perf_counter()
        acc = book.fit(model, dset, valid_dset, verbose=False)
        took = time.perf_counter() - t0
        return {
            "seconds": took,
            "accuracy": round(acc["image_weighted"], 4),
            "batch_mean": acc["batch_mean"],
            "threads": torch.get_num_threads(),
        }
    tr, va = load_split(tensors / "train.safetensors"), load_split(tensors / "valid.safetensors")
    torch.set_num_threads(cpu_threads(model, 256, spec.width))  # as the train stage does
    t0 = time.perf_counter()
    seed_everything(42, torch.device("cpu"))
    net = build_model(spec)
    learn = Learner(
        model=net,
        train_x=tr.x,
        train_y=targets_for(spec, class_targets(tr.labels, [3, 7])),
        valid_x=va.x,
        valid_y=targets_for(spec, class_targets(va.labels, [3, 7])),
        loss_func=mnist_loss,
        opt=BasicOptim(net.parameters(), lr),
    )
    hist = learn.fit(epochs, lr)
    took = time.perf_counter() - t0
    return {
        "seconds": took,
        "accuracy": round(hist[-1].valid_accuracy, 4),
        "threads": torch.get_num_threads(),
    }


# --- the table ---------------------------------------------------------------------------------


@dataclass
class Row:
    work: str
    ours: list[Sample]
    book: list[Sample] | None
    target: str
    check: str  # how `met` is judged: speedup>=X | abs<X | mem | none
    note: str = ""
    book_add: list[Sample] | None = None  # added to the book's median (e.g. tar xzf)

    def med(self, xs: list[Sample] | None, attr: str = "seconds") -> float | None:
        return statistics.median(getattr(s, attr) for s in xs) if xs else None

    def cells(self, book_mem: tuple[float, float] | None) -> list[str]:
        o = self.med(self.ours)
        b = self.med(self.book)
        if b is not None and self.book_add:
            b += self.med(self.book_add)
        speed = b / o if b and o else None
        o_rss, o_pss = self.med(self.ours, "rss_mb"), self.med(self.ours, "pss_mb")
        ref = (
            (self.med(self.book, "rss_mb"), self.med(self.book, "pss_mb"))
            if self.book and self.book[0].rss_mb
            else book_mem
        )
        met = "-"
        kind, _, arg = self.check.partition(":")
        if kind == "speedup" and speed is not None:
            met = "yes" if speed >= float(arg) else f"no ({speed / float(arg):.2f} of it)"
        elif kind == "abs" and o is not None:
            met = "yes" if o < float(arg) else f"no (+{o - float(arg):.2f} s)"
        if kind in ("speedup", "abs", "mem") and "mem" in self.target and ref and o_rss:
            mem_ok = o_rss <= ref[0] and o_pss <= ref[1]
            met = (
                ("yes" if mem_ok else "no (memory)")
                if met in ("-", "yes")
                else met + ("" if mem_ok else ", memory")
            )
        secs = [s.seconds for s in self.ours]
        spread = f" ({min(secs):.2f}-{max(secs):.2f})"
        bspread = ""
        if self.book and not self.book_add:
            bsecs = [s.seconds for s in self.book]
            bspread = f" ({min(bsecs):.2f}-{max(bsecs):.2f})"
            best = min(bsecs) / min(secs)
            bspread += f"; best of each {best:.1f}x"
        mem = f"{o_rss:.0f} / {o_pss:.0f}" if o_rss else "-"
        if o_rss and ref and ref[0]:
            mem += f" vs {ref[0]:.0f} / {ref[1]:.0f}"
        return [
            self.work,
            f"{o:.2f}{spread}" if o is not None else "-",
            f"{b:.2f}{bspread}" if b is not None else "-",
            f"{speed:.1f}x" if speed else "-",
            self.target,
            met,
            mem,
            self.note,
        ]


HEAD = [
    "work",
    "ours median s (min-max)",
    "book median s (min-max; speedup of the fastest runs)",
    "speedup book/ours",
    "target",
    "met?",
    "peak MB ours RSS / tree PSS vs book",
    "notes",
]


def table(rows: list[Row], book_mem: tuple[float, float] | None) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r.cells(book_mem)) + " |" for r in rows]
    return "\n".join(lines)


def machine(load_before: str, load_after: str) -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    torch_v = sh(
        [PY, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"], REPO
    ).split()
    return (
        f"machine: nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, "
        f"torch {torch_v[0]} ({torch_v[1]} threads); load average before {load_before}, "
        f"after {load_after}"
    )


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- the works ----------------------------------------------------------------------------------


def alternate(runs: int, ours, book) -> tuple[list[Sample], list[Sample]]:
    """ours(), book(), ours(), book() ... so that load drifts hit both alike."""
    a, b = [], []
    for i in range(runs):
        a.append(ours(i))
        if book is not None:
            b.append(book(i))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return a, b


def run_all(s: Scratch, runs: int, only: set[str]) -> tuple[list[Row], dict]:
    extra: dict = {}

    class Rows(list):
        """Prints each row to stderr as soon as it is measured (a long run shows progress)."""

        def append(self, row: Row) -> None:
            super().append(row)
            print(table([row], None).splitlines()[-1], file=sys.stderr, flush=True)

    rows: list[Row] = Rows()
    st, env = s.stages, env_for(s.stages)
    tree = str(s.tree)

    def stage(name: str, cwd: Path = st, e: dict = env):
        return lambda i: measure([PY, f"stages/{name}.py"], cwd, e)

    def book(*args: str, cwd: Path = st):
        return lambda i: measure([PY, str(BOOK), *args], cwd, env)

    book_full: list[Sample] = []

    def need_book_full() -> list[Sample]:
        if not book_full:
            print("book_style.py top to bottom", file=sys.stderr, end="")
            book_full.extend(alternate(runs, book(tree), None)[0])
            extra["book_full_out"] = book_full[-1].out.strip().splitlines()[-1]
        return book_full

    if "tensorize" in only:
        print("tensorize", file=sys.stderr, end="")
        o, b = alternate(runs, stage("tensorize"), book(tree, "--phase", "tensorize"))
        rows.append(
            Row(
                "tensorize 3s and 7s (14,434 PNGs), process",
                o,
                b,
                ">= 3x, peak mem no higher",
                "speedup:3",
            )
        )
    for model, target, x in (("linear", ">= 10x", 10), ("simple_net", ">= 2x", 2)):
        if f"train_{model}" in only:
            set_param(st, "model", model)
            print(f"train {model}", file=sys.stderr, end="")
            o, b = alternate(
                runs, stage("train"), book("--tensors", "data/tensors", "--phase", model)
            )
            set_param(st, "model", "linear")
            acc = json.loads((st / "metrics/train/metrics.json").read_text())
            bk = json.loads(b[-1].out.strip().splitlines()[-1])[model]
            rows.append(
                Row(
                    f"train {model}, process (stage vs book train-only)",
                    o,
                    b,
                    "- (the loop row carries the target; here both import torch)",
                    "none",
                    f"final valid acc ours {acc['valid']['accuracy']:.4f}, book "
                    f"{bk['image_weighted']:.4f} (batch mean {bk['batch_mean']})",
                )
            )
        if f"loop_{model}" in only:
            print(f"loop {model}: {runs} x (ours, book), a process each", file=sys.stderr)

            def loop(which: str, model: str = model) -> dict:
                cmd = [PY, str(Path(__file__).resolve()), "--_loop", f"{model}:{which}"]
                out = sh(cmd, st, env)  # no memory sampler: it would steal from the loop
                return json.loads(out.strip().splitlines()[-1])

            got: dict[str, list[dict]] = {"ours": [], "book": []}
            for _ in range(runs):
                got["ours"].append(loop("ours"))
                got["book"].append(loop("book"))
            o = [Sample(r["seconds"], 0, 0) for r in got["ours"]]
            b = [Sample(r["seconds"], 0, 0) for r in got["book"]]
            res = {
                "ours_accuracy": got["ours"][-1]["accuracy"],
                "book_accuracy": got["book"][-1]["accuracy"],
                "book_batch_mean": got["book"][-1]["batch_mean"],
            }
            same = "same" if res["ours_accuracy"] == res["book_accuracy"] else "DIFFERENT"
            rows.append(
                Row(
                    f"train {model}, loop only (Learner.fit vs DataLoader loop)",
                    o,
                    b,
                    target + ", same final accuracy",
                    f"speedup:{x}",
                    f"acc ours {res['ours_accuracy']} vs book {res['book_accuracy']} "
                    f"({same}; book batch mean {res['book_batch_mean']})",
                )
            )
    if "exp_run" in only:
        # In a copy of proj, so that proj stays a no-op for `dvc repro`.
        ex = s.root / "exp"
        if not ex.exists():
            shutil.copytree(s.proj, ex, symlinks=True)
        pe = env_for(ex)

        def exp(i: int) -> Sample:
            sh(["git", "checkout", "-q", "--", "params.yaml", "dvc.lock"], ex)
            sh(["dvc", "checkout", "-q"], ex, pe)
            shutil.rmtree(ex / ".dvc/cache/runs", ignore_errors=True)  # no run-cache hit
            r = measure(["dvc", "exp", "run", "-S", "train.lr=0.5"], ex, pe)
            ran = [x for x in ("train", "evaluate") if f"Running stage '{x}'" in r.out]
            if ran != ["train", "evaluate"]:
                raise RuntimeError(f"exp run did not re-run train and evaluate:\n{r.out}")
            return r

        print("dvc exp run -S train.lr=0.5", file=sys.stderr, end="")
        o, _ = alternate(runs, exp, None)
        rows.append(
            Row(
                "`dvc exp run -S train.lr=0.5` vs book script top to bottom",
                o,
                need_book_full(),
                "no slower",
                "speedup:1",
                "book: tensorize, pixel similarity, linear, simple_net",
            )
        )
    if "noop_repro" in only:
        print("no-op dvc repro", file=sys.stderr, end="")
        o, _ = alternate(runs, lambda i: measure(["dvc", "repro"], s.proj, env_for(s.proj)), None)
        if "up to date" not in o[-1].out:
            raise RuntimeError(f"dvc repro was not a no-op:\n{o[-1].out}")
        rows.append(Row("no-op `dvc repro`", o, None, "< 2 s", "abs:2"))
    if "cold_repro" in only:
        tgz = s.root / "mnist_sample.tgz"
        if not tgz.exists():
            sh(["tar", "czf", str(tgz), "-C", str(s.tree.parent), "mnist_sample"], s.root)

        def cold(i: int) -> Sample:
            d = s.root / f"cold{i}"
            shutil.rmtree(d, ignore_errors=True)
            s.clone(d)
            r = measure(["dvc", "repro"], d, env_for(d))
            shutil.rmtree(d, ignore_errors=True)
            return r

        def untar(i: int) -> Sample:
            d = s.root / f"untar{i}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            r = measure(["tar", "xzf", str(tgz)], d)
            shutil.rmtree(d, ignore_errors=True)
            return r

        print("cold dvc repro / tar xzf", file=sys.stderr, end="")
        o, t = alternate(runs, cold, untar)
        extra["tar_xzf_median"] = statistics.median(x.seconds for x in t)
        rows.append(
            Row(
                "cold `dvc repro`, empty cache, local IDX source",
                o,
                need_book_full(),
                "<= 2x book + tar xzf",
                "speedup:0.5",
                f"book = script top to bottom + tar xzf mnist_sample.tgz "
                f"({extra['tar_xzf_median']:.2f} s)",
                book_add=t,
            )
        )
    if "tensorize10" in only or "download10" in only:
        ten = s.root / "ten"
        if not (ten / "data/raw.zip").exists():
            s.clone(ten)
            set_param(ten, "digits", "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
            sh([PY, "stages/download.py"], ten, env_for(ten))
        tree10 = unzip(ten / "data/raw.zip", s.root / "tree10") / "mnist_0123456789"
        te = env_for(ten)
        print("tensorize ten digits", file=sys.stderr, end="")
        o, b = alternate(
            runs,
            stage("tensorize", ten, te),
            book(
                str(tree10),
                "--phase",
                "tensorize",
                "--digits",
                "0,1,2,3,4,5,6,7,8,9",
                cwd=ten,
            ),
        )
        rows.append(Row("tensorize ten digits (70,000 PNGs), process", o, b, "< 3 s", "abs:3"))
    if "stages" in only:
        for name in ("download", "tensorize", "baseline", "train", "evaluate"):
            print(f"stage {name}", file=sys.stderr, end="")
            o, _ = alternate(runs, stage(name), None)
            rows.append(
                Row(
                    f"stage {name} (memory vs book top to bottom)",
                    o,
                    None,
                    "peak mem <= book script's",
                    "mem",
                )
            )
        need_book_full()
    if book_full:
        extra["book_full"] = book_full
    return rows, extra


def condense(path: Path, share: float = 0.02) -> None:
    """Keep a pyinstrument text report's header and the frames worth >= share of the total."""
    lines = path.read_text().splitlines()
    num = re.compile(r"^[\s│├└─]*([0-9]+\.[0-9]+) ")
    times = [float(m.group(1)) for ln in lines if (m := num.match(ln))]
    if not times:
        return
    floor = max(times) * share
    keep = [ln for ln in lines if not (m := num.match(ln)) or float(m.group(1)) >= floor]
    path.write_text("\n".join(ln for ln in keep if "frames hidden" not in ln) + "\n")


def pyinstrument(report: Path, args: list[str], cwd: Path, env: dict) -> None:
    """Run `python -m pyinstrument ... args` in cwd, its text report written to `report`."""
    sh([PY, "-m", "pyinstrument", "-r", "text", "-o", str(report), *args], cwd, env)


def profile(s: Scratch) -> None:
    """pyinstrument each stage once (and the book script), text reports in bench/profiles/."""
    out = BENCH / "profiles"
    out.mkdir(exist_ok=True)
    env = env_for(s.stages)
    for name in ("download", "tensorize", "baseline", "train", "evaluate"):
        print(f"profiling {name}", file=sys.stderr)
        pyinstrument(out / f"{name}.txt", ["--show-all", f"stages/{name}.py"], s.stages, env)
    # tensorize decodes in worker processes, which pyinstrument does not follow: one in-process
    # pass over the same chunk function shows where a worker's time goes.
    code = (
        "from pathlib import Path\n"
        "from mnist_basics import rawzip\n"
        "from mnist_basics.tensorize import _decode_chunk, list_members\n"
        "with rawzip.open_zip(Path('data/raw.zip')) as zf:\n"
        "    _, listed = list_members(zf, [])\n"
        "    train = rawzip.spans(zf, listed['train'][0])\n"
        "_decode_chunk('data/raw.zip', train)\n"
    )
    pyinstrument(out / "tensorize_worker.txt", ["-c", code], s.stages, env)
    print("profiling book_style.py", file=sys.stderr)
    pyinstrument(out / "book_style.txt", [str(BOOK), str(s.tree)], s.stages, env)
    # DVC's own share (its stages run as child processes, which pyinstrument shows as waiting)
    dvc = shutil.which("dvc", path=env["PATH"]) or "dvc"
    sh([dvc, "repro", "-q"], s.stages, env)  # settle, so that the next repro has nothing to do
    print("profiling a no-op dvc repro and dvc exp run", file=sys.stderr)
    pyinstrument(out / "noop_repro.txt", [dvc, "repro"], s.stages, env)
    pyinstrument(out / "exp_run.txt", [dvc, "exp", "run", "-S", "train.lr=0.5"], s.stages, env)
    sh(["git", "checkout", "-q", "--", "params.yaml", "dvc.lock"], s.stages)
    sh([dvc, "checkout", "-q", "--force"], s.stages, env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default=",".join(WORKS), help="comma list of: " + ", ".join(WORKS))
    ap.add_argument(
        "--mnist",
        type=Path,
        default=REPO.parent / "shared/data/mnist",
        help="folder with the four IDX .gz files (never copied into the project)",
    )
    ap.add_argument("--scratch", type=Path, help="reuse this scratch folder (made if missing)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--profile", action="store_true", help="pyinstrument each stage once")
    ap.add_argument("--write", type=Path, help="also write the table and machine line here")
    ap.add_argument("--_loop", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._loop:
        model, which = a._loop.split(":")
        print(json.dumps(loop_once(model, which)))
        return
    only = set(a.only.split(","))
    if unknown := only - set(WORKS) - {"download10"}:
        ap.error(f"unknown works {sorted(unknown)}; known: {', '.join(WORKS)}")
    if a.runs < 5:
        print(f"note: --runs {a.runs} < 5, medians are rough", file=sys.stderr)
    load0 = loadavg()
    root = a.scratch or Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    s = Scratch(root.resolve(), a.mnist.resolve())
    try:
        print(f"scratch {s.root}: clone, first dvc repro", file=sys.stderr)
        s.setup()
        if a.profile:
            profile(s)
        rows, extra = run_all(s, a.runs, only)
        # The code measured is the scratch clone's (HEAD^ of base: base adds one params commit).
        commit = sh(["git", "rev-parse", "--short", "HEAD^"], s.base).strip()
    finally:
        if not (a.keep or a.scratch):
            shutil.rmtree(root, ignore_errors=True)
    book_full = extra.get("book_full")
    book_mem = (
        (
            statistics.median(x.rss_mb for x in book_full),
            statistics.median(x.pss_mb for x in book_full),
        )
        if book_full
        else None
    )
    lines = [
        f"commit {commit}, {a.runs} runs per figure (median), {time.strftime('%Y-%m-%d %H:%M')}",
        machine(load0, loadavg()),
        "",
        table(rows, book_mem),
        "",
    ]
    if book_full:
        med = statistics.median(x.seconds for x in book_full)
        lines.append(
            f"book script top to bottom: median {med:.2f} s; "
            f"last output: `{extra['book_full_out']}`"
        )
    text = "\n".join(lines)
    print(text)
    if a.write:
        a.write.write_text(text + "\n")
        raw = {
            r.work: {
                k: [round(x.seconds, 3) for x in v or []]
                for k, v in (("ours", r.ours), ("book", r.book), ("book_add", r.book_add))
            }
            for r in rows
        }
        a.write.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
