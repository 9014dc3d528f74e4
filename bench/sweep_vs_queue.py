"""Wall time of one 4-run sweep, four ways: `mnist-basics sweep` on a local Ray, the same on a
two-node Ray cluster (1 CPU each) by its GCS address and through the Ray client, and
`dvc exp run --queue` + `dvc queue start -j 2`. README's "Sweeps across machines" table.

    python bench/sweep_vs_queue.py [--source PATH] [--epochs N]

All start from the same committed, reproduced project (the synthetic 3s and 7s by default, or
a data source of yours such as ../shared/data/mnist), with a bare git origin and a local-folder
DVC remote; the grid is `train.lr=0.1,0.5,1.0,-1` (the last is refused by the pipeline, as in
the test). A sweep's figure includes its clone, pull and exp push of each run and the final
`dvc exp pull`, and apart the seconds of its tasks (what is left is starting Ray and the pull); the
queue's runs from `dvc exp run --queue` until every task has finished. The cluster is the tests'
(tests/ray_cluster.py), both nodes on this machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dvc_fixtures import DvcProject, make_project
from ray_cluster import start_cluster
from share_fixtures import copy_project, with_origin
from synthetic import write_fastai_tree

GRID = ["-S", "train.lr=0.1,0.5,1.0,-1"]


def sweep(proj: DvcProject, name: str, grid: list[str], *address: str) -> str:
    """One `mnist-basics sweep`; its wall time and what it says of its tasks."""
    env = dict(proj.env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    t = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "mnist_basics.cli", "sweep", "-n", name, *grid, *address],
        cwd=proj.path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    wall = time.monotonic() - t
    print(r.stdout[-2000:], r.stderr[-1000:])
    landed = re.search(r"runs landed on .* in ([\d.]+) s", r.stdout)
    tasks = f", {landed.group(1)} s for the four tasks" if landed else ""
    return f"{wall:.1f} s (exit {r.returncode}{tasks})"


def queue(proj: DvcProject, grid: list[str]) -> str:
    t = time.monotonic()
    proj.dvc("exp", "run", "--queue", "-n", "q", *grid)
    proj.dvc("queue", "start", "-j", "2")
    while True:
        text = proj.dvc("queue", "status").stdout
        if not any(s in text for s in ("Queued", "Running")):
            break
        time.sleep(1)
    wall = time.monotonic() - t
    print(text)
    proj.stop_queue()
    return f"{wall:.1f} s"


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
    figures = {"local Ray": sweep(ray_proj, "local", grid)}
    for cluster in start_cluster(ray_proj.env):
        figures["two nodes, --address HOST:PORT"] = sweep(
            ray_proj, "gcs", grid, "--address", cluster.gcs
        )
        figures["two nodes, --address ray://HOST:PORT"] = sweep(
            ray_proj, "client", grid, "--address", cluster.client
        )
    figures["dvc queue -j 2"] = queue(copy_project(proj, base / "queue" / "repo"), grid)
    print(f"source {source}:")
    for how, figure in figures.items():
        print(f"  {how}: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
