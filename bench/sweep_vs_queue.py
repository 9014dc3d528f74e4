"""Wall time of one 4-run sweep: `mnist-basics sweep` on a local Ray vs `dvc queue start -j 2`.

    python bench/sweep_vs_queue.py [--source PATH] [--epochs N]

Both start from the same committed, reproduced project (the synthetic 3s and 7s by default, or
a data source of yours such as ../shared/data/mnist), with a bare git origin and a local-folder
DVC remote; the grid is `train.lr=0.1,0.5,1.0,-1` (the last is refused by the pipeline, as in
the test). The sweep's figure includes its clone, pull, exp push of each run and the final
`dvc exp pull`; the queue's runs from `dvc exp run --queue` until every task has finished.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dvc_fixtures import make_project
from share_fixtures import copy_project, with_origin
from synthetic import write_fastai_tree

GRID = ["-S", "train.lr=0.1,0.5,1.0,-1"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=None)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    source = args.source
    if source is None:
        write_fastai_tree(base / "synthetic", [3, 7])
        source = str(base / "synthetic")
    proj = make_project(base / "t" / "repo", [source], [3, 7])
    proj.dvc("remote", "add", "-d", "store", str(base / "store"))
    proj.dvc("repro", timeout=1200)
    proj.commit("reproduced")
    grid = [*GRID, "-S", f"train.epochs={args.epochs}"]

    ray_proj = copy_project(proj, base / "ray" / "repo")
    with_origin(ray_proj, base / "origin.git")
    ray_proj.dvc("push", timeout=600)
    t = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "sweep", "-n", "b", *grid],
        cwd=ray_proj.path,
        env=ray_proj.env,
        capture_output=True,
        text=True,
    )
    ray_s = time.monotonic() - t
    print(r.stdout[-2000:], r.stderr[-1000:])

    q = copy_project(proj, base / "queue" / "repo")
    t = time.monotonic()
    q.dvc("exp", "run", "--queue", "-n", "q", *grid)
    q.dvc("queue", "start", "-j", "2")
    while True:
        text = q.dvc("queue", "status").stdout
        if not any(s in text for s in ("Queued", "Running")):
            break
        time.sleep(1)
    queue_s = time.monotonic() - t
    print(text)
    q.stop_queue()
    print(
        f"source {source}: ray sweep {ray_s:.1f} s (exit {r.returncode}), "
        f"dvc queue -j 2 {queue_s:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
