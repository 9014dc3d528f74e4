"""Stage tensorize: the PNGs in data/raw.zip -> data/tensors/{train,valid}.safetensors."""

from pathlib import Path

import _checkout  # noqa: F401  (first: this checkout's library)

from mnist_basics.stage import run_stage
from mnist_basics.tensorize import tensorize

RAW, TENSORS = Path("data/raw.zip"), Path("data/tensors")

if __name__ == "__main__":
    run_stage("tensorize", lambda p: tensorize(RAW, TENSORS), outputs=[TENSORS])
