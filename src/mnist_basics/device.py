"""Where the work runs: params' `device` turned into a torch.device (or a clear error when it is
not on this machine), and how many CPU threads a model's kernels get."""

from __future__ import annotations

import torch

from mnist_basics.errors import UserError


def available() -> list[str]:
    """Devices this machine has, in the order `auto` prefers them."""
    found = (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve(name: str, key: str = "train.device") -> torch.device:
    """`auto` takes the first GPU there is; anything else must exist here."""
    have = available()
    if name == "auto":
        return torch.device(have[0])
    wanted = "cuda:0" if name == "cuda" else name
    if wanted not in have:
        raise UserError(
            f"params.yaml: {key} = {name}, but this machine has no such device; "
            f"available here: auto, {', '.join(have)}"
        )
    return torch.device(wanted)


# Below this many multiply-adds per matmul, splitting a kernel across threads costs more than it
# saves: the book's models on 256-image batches (0.2 M for linear, 6 M for simple_net) train
# 1.0-1.3x faster on one thread here, and several times faster when another process (a second
# queued experiment, the test suite) holds the other core, where OpenMP's threads wait on it.
ONE_THREAD_BELOW = 10_000_000


def cpu_threads(model: str, batch_size: int, width: int) -> int:
    """Intra-op threads for training `model` on the CPU: one for a matmul model whose first layer
    (`width` outputs) is small, torch's default (a thread per core) for the rest."""
    if model != "cnn" and batch_size * 28 * 28 * width < ONE_THREAD_BELOW:
        return 1
    return torch.get_num_threads()
