"""Golden bytes: the hashes of each model and of each kernel it uses, per CPU kind and kernels
setting, recorded in tests/golden/bytes.json and compared by tests/test_golden_bytes.py.

    python tests/golden.py record    # adds (or replaces) this CPU kind's record

Models are trained by the train stage itself, in a subprocess, so its own kernel pins apply; the
kernel fingerprints are those of ../shared/tools/kernel_fingerprint.py (the same ops, same order).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "bytes.json"
MNIST = ROOT.parent / "shared" / "data" / "mnist"
THREADS = {"portable": 1, "native": 2}  # the default's, and the fast recipes'
CNN = {"model": "cnn", "optimizer": "adam", "lr": 0.01, "epochs": 1, "shuffle": True}
TEN = list(range(10))
# name: (digits, train params, training images used: None for all)
RUNS = {
    "linear": ([3, 7], {}, None),
    "simple_net": ([3, 7], {"model": "simple_net", "lr": 0.1, "epochs": 3}, None),
    "cnn_37": ([3, 7], CNN, 2048),
    "cnn_10": (TEN, CNN | {"loss_func": "cross_entropy", "schedule": "one_cycle"}, 2048),
}


def cpu_kind() -> str:
    """`vendor-isa`, from /proc/cpuinfo: the two facts that decide which kernels run."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(
        next((ln.split(":")[1].strip() for ln in info.splitlines() if "vendor_id" in ln), ""),
        "other",
    )
    flags = set(
        next((ln.split(":")[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    )
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{vendor}-{isa}"


def tensors_hash(path: Path) -> str:
    """sha256[:16] of a safetensors file's tensors (names, dtypes, shapes, bytes), not its
    metadata: what the kernels computed."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    for name, a in sorted(load_file(str(path)).items()):
        h.update(f"{name} {a.dtype} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def subset(src: Path, dst: Path, n_train: int | None) -> None:
    """A tensors folder holding n_train training images spread over every digit (and 512 valid
    ones), or links to all of them for None."""
    from safetensors.numpy import load_file, safe_open, save_file

    dst.mkdir(parents=True)
    if n_train is None:
        for split in ("train", "valid"):
            (dst / f"{split}.safetensors").symlink_to(src / f"{split}.safetensors")
        return
    for split, n in (("train", n_train), ("valid", 512)):
        with safe_open(str(src / f"{split}.safetensors"), "np") as f:
            meta = f.metadata()
        t = load_file(str(src / f"{split}.safetensors"))
        step = max(1, len(t["labels"]) // n)  # the splits are in digit order: every step-th
        t = {k: v[::step][:n].copy() for k, v in t.items()}
        save_file(t, str(dst / f"{split}.safetensors"), metadata=meta)


def train_stage(
    project: Path, tensors: Path, digits: list[int], train: dict, n: int | None
) -> Path:
    """Run the train stage in `project` on n training images of `tensors` (None: all)."""
    import yaml

    subset(tensors, project / "data" / "tensors", n)
    from mnist_basics.params import defaults

    params = defaults()
    params["data"]["digits"] = digits
    params["train"].update(train)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if r.returncode != 0:
        raise RuntimeError(f"train stage failed with {params}: {r.stderr[-2000:]}")
    return project / "models" / "model.safetensors"


def train_hash(name: str, kernels: str, tensors: Path) -> str:
    """Train run `name` with the train stage under `kernels`; the model's tensors hash."""
    digits, train, n = RUNS[name]
    train = train | {"kernels": kernels, "threads": THREADS[kernels]}
    with tempfile.TemporaryDirectory() as tmp:
        return tensors_hash(train_stage(Path(tmp), tensors, digits, train, n))


def fingerprints(kernels: str) -> dict[str, str]:
    """Each kernel's output hash under `kernels`, from a fresh process (pins precede torch)."""
    r = subprocess.run(
        [sys.executable, __file__, "_fingerprints", kernels],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=ROOT,
    )
    return json.loads(r.stdout)


def _print_fingerprints(kernels: str) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from mnist_basics import numerics

    threads = THREADS[kernels]
    numerics.pin_env(threads, kernels)
    import torch
    import torch.nn.functional as F

    numerics.pin_torch(torch, threads, kernels)
    g = torch.Generator().manual_seed(0)
    out: dict[str, str] = {}

    def show(name: str, *ts: torch.Tensor) -> None:
        out[name] = " ".join(
            hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16] for t in ts
        )

    x = torch.rand(256, 784, generator=g)
    w = torch.randn(784, 30, generator=g, requires_grad=True)
    show("mm 256x784x30", x @ w)
    show("mm 256x784x1", x @ w[:, :1])
    y = (x @ w).sigmoid()
    show("sigmoid", y)
    y.sum().backward()
    show("mm backward", w.grad)
    show("exp/log", x.exp(), (x + 1).log())
    show("sum 1e6", torch.rand(1_000_000, generator=g).sum())
    img = torch.rand(256, 1, 28, 28, generator=g, requires_grad=True)
    k1 = torch.randn(16, 1, 3, 3, generator=g, requires_grad=True)
    k2 = torch.randn(32, 16, 3, 3, generator=g, requires_grad=True)
    c1 = F.conv2d(img, k1, padding=1)
    show("conv 1->16", c1)
    b1 = F.batch_norm(c1, None, None, training=True)
    show("batch_norm train", b1)
    r1 = F.max_pool2d(F.relu(b1), 2)
    show("relu+maxpool", r1)
    c2 = F.conv2d(r1, k2, padding=1)
    show("conv 16->32", c2)
    c2.square().mean().backward()
    show("conv backward", k1.grad, k2.grad, img.grad)
    logits = torch.randn(256, 10, generator=g)
    show("cross_entropy", F.cross_entropy(logits, torch.randint(0, 10, (256,), generator=g)))
    p = torch.nn.Parameter(torch.randn(1000, generator=g))
    opt = torch.optim.Adam([p], lr=0.01, fused=True)  # as optim.make_optimizer makes it
    for _ in range(3):
        p.square().sum().backward()
        opt.step()
        opt.zero_grad()
    show("adam 3 steps", p)
    print(json.dumps(out))


def real_tensors(digits: list[int], folder: Path) -> Path:
    """The real MNIST's tensors for `digits`, made from ../shared/data/mnist by the library."""
    sys.path.insert(0, str(ROOT / "src"))
    from mnist_basics.download import download
    from mnist_basics.tensorize import tensorize

    download(digits, [str(MNIST)], 10, folder / "raw.zip")
    tensorize(folder / "raw.zip", folder / "tensors")
    return folder / "tensors"


def measure(tensors: dict[str, Path]) -> dict:
    """This machine's record: per kernels setting, every kernel's and every run's hash."""
    return {
        kernels: {
            "kernels": fingerprints(kernels),
            "models": {
                name: train_hash(name, kernels, tensors["10" if run[0] == TEN else "37"])
                for name, run in RUNS.items()
            },
        }
        for kernels in THREADS
    }


def record() -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        t = {
            "37": real_tensors([3, 7], Path(tmp) / "37"),
            "10": real_tensors(TEN, Path(tmp) / "10"),
        }
        mine = measure(t)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"kinds": {}}
    cpu = next(
        (
            ln.split(":")[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        "unknown",
    )
    golden["kinds"][cpu_kind()] = {"cpu": cpu, "torch": torch.__version__, **mine}
    GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
    print(f"recorded {cpu_kind()} ({cpu}) in {GOLDEN.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_fingerprints"]:
        _print_fingerprints(sys.argv[2])
    elif sys.argv[1:] == ["record"]:
        record()
    else:
        sys.exit("usage: python tests/golden.py record")
