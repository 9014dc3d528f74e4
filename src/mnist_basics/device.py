"""params' `device` turned into a torch.device, or a clear error when it is not on this machine."""

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
