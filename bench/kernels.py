"""What each kernel pin costs: CNN training steps per second under each CPU kernel setting.

    python bench/kernels.py [--mnist ../shared/data/mnist] [--steps 40]

Each setting runs in its own process (the pins are read when torch loads): the ten-digit CNN of
params.yaml's defaults (train.width), Adam, batches of 256 real MNIST training images, after 3
warm-up steps. `portable` and `native` are train.kernels' two settings; the rows between are the
pins one at a time, to show which one costs what.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTABLE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
SETTINGS = {  # name: (environment, oneDNN on, channels_last)
    "portable (ATen default, MKL_CBWR=COMPATIBLE, no oneDNN)": (PORTABLE, False, False),
    "ATen avx2, MKL_CBWR=AVX2, no oneDNN": (
        {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
        False,
        False,
    ),
    "ATen best, MKL unpinned, no oneDNN": ({}, False, False),
    "native, oneDNN, NCHW": ({}, True, False),
    "native (oneDNN, channels_last)": ({}, True, True),
}
STEP = """
import json, sys, time, torch
from safetensors.numpy import load_file
sys.path.insert(0, "src")
from mnist_basics.models import cnn
threads, onednn, cl, steps, path = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.backends.mkldnn.enabled = onednn
torch.backends.nnpack.set_flags(False)
torch.manual_seed(0)
t = load_file(path)
x = torch.from_numpy(t["images"]).float().div(255).view(-1, 784)
y = torch.from_numpy(t["labels"])
perm = torch.randperm(len(x))
model = cnn(10)
if cl:
    model = model.to(memory_format=torch.channels_last)
opt = torch.optim.Adam(model.parameters(), lr=0.01)
def step(i):
    idx = perm[i * 256:(i + 1) * 256]
    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
    loss.backward(); opt.step(); opt.zero_grad()
for i in range(3): step(i)
t0 = time.perf_counter()
for i in range(3, 3 + steps): step(i)
rate = steps * 256 / (time.perf_counter() - t0)
print(json.dumps({"cap": torch.backends.cpu.get_cpu_capability(), "img_s": rate}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", type=Path, default=REPO.parent / "shared/data/mnist")
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from mnist_basics.download import download
    from mnist_basics.tensorize import tensorize

    with tempfile.TemporaryDirectory() as tmp:
        download(list(range(10)), [str(a.mnist)], 10, Path(tmp) / "raw.zip")
        tensorize(Path(tmp) / "raw.zip", Path(tmp) / "t")
        train = str(Path(tmp) / "t" / "train.safetensors")
        print("| kernels | ATen | images/s, 1 thread | images/s, 2 threads |")
        print("|---|---|---|---|")
        for name, (pins, onednn, cl) in SETTINGS.items():
            figures = []
            for threads in (1, 2):
                env = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "MKL_"))}
                env |= pins | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                r = subprocess.run(
                    [sys.executable, "-c", STEP, json.dumps([threads, onednn, cl, a.steps, train])],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures.append(json.loads(r.stdout))
            cells = " | ".join(f"{f['img_s']:,.0f}" for f in figures)
            print(f"| {name} | {figures[0]['cap']} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
