"""Small models for the predict and serve tests, and a git + DVC repository holding two of them
at two revisions (no pipeline: `dvc add`), so `--rev` and the page's selector have something to
choose from in seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from synthetic import make_images

from mnist_basics.models import ModelSpec, build_model, save_tensors
from mnist_basics.preprocess import to_mnist

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc") if (BIN / "dvc").exists() else "dvc"


def glyph_data(digits: list[int], n: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic glyphs of `digits`, brought to MNIST's form (centred by mass): x, classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, d in enumerate(digits):
        for img in make_images(d, n, rng):
            # pad onto a larger field so to_mnist crops, scales and centres it
            big = np.zeros((40, 40), np.uint8)
            big[6:34, 6:34] = img
            xs.append(to_mnist(Image.fromarray(big)).x)
            ys.append(k)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def small_model(
    digits: list[int], seed: int = 0, steps: int = 150
) -> tuple[torch.nn.Module, ModelSpec]:
    """A linear model (softmax, or the book's single logit for two digits) fitted to the glyphs
    in a second or two."""
    torch.manual_seed(seed)
    two = len(digits) == 2
    spec = ModelSpec(
        "linear", tuple(digits), "mnist_loss" if two else "cross_entropy", init_std=0.01
    )
    model = build_model(spec)
    x, y = glyph_data(digits, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        logits = model(x)
        if two:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[:, 0], (y == 0).float()
            )
        else:
            loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), spec


def write_model(path: Path, digits: list[int], seed: int = 0) -> ModelSpec:
    model, spec = small_model(digits, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(model.state_dict(), spec, path)
    return spec


def run(cwd: Path, *args: str) -> str:
    r = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 0, f"{' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def revisions_repo(root: Path) -> Path:
    """A git + DVC repo: tag v1 holds a ten-digit model, main (and the workspace) a 3-vs-7 one."""
    root.mkdir(parents=True, exist_ok=True)
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "config", "user.name", "test")
    run(root, "git", "config", "user.email", "test@example.invalid")
    run(root, DVC, "init", "-q")
    run(root, DVC, "config", "core.analytics", "false")
    run(root, DVC, "config", "core.check_update", "false")
    model = root / "models" / "model.safetensors"
    write_model(model, list(range(10)))
    run(root, DVC, "add", "-q", "models/model.safetensors")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "ten digits")
    run(root, "git", "tag", "v1")
    model.unlink()
    write_model(model, [3, 7], seed=1)
    run(root, DVC, "add", "-q", "models/model.safetensors")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "3 vs 7")
    return root
