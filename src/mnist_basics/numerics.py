"""Which CPU kernels run, chosen by the `train.kernels` param, so the bytes depend on params only.

PyTorch picks its kernels by CPU and its sums by thread count, and each choice changes the order
of float additions, so the bytes: `portable` (the default) is the baseline path every x86-64 CPU
runs, the same bytes on every CPU; `native` the fastest this CPU has, the same bytes on one CPU
kind. docs/reproducibility.md has what holds on which CPUs, measured.
"""

import os
import sys

PORTABLE = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's baseline kernels, not AVX2 / AVX-512
    "MKL_CBWR": "COMPATIBLE",  # MKL's conditional numerical reproducibility: one code path
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}
# The user's own settings of these would change the bytes: they are dropped.
DROPPED = (*PORTABLE, "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "DNNL_MAX_CPU_ISA")


def pin_env(threads: int, kernels: str = "portable") -> None:
    """Set the environment the kernels read when torch loads; call before `import torch`."""
    if "torch" in sys.modules:
        raise RuntimeError("pin_env must run before torch is imported")
    for key in DROPPED:
        os.environ.pop(key, None)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    os.environ.update(MKL_DYNAMIC="FALSE", OMP_DYNAMIC="FALSE")
    if kernels == "portable":
        os.environ.update(PORTABLE)


# NumPy picks its loops by CPU too: exp and log (the evaluate stage's softmax, sigmoid and loss)
# have AVX2 and AVX-512 versions whose last bits differ from the baseline's, and the gallery's
# order of mistakes follows those bits. Names another architecture lacks are ignored.
NUMPY_ABOVE_BASELINE = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"


def pin_numpy() -> None:
    """NumPy's baseline loops, the same on every x86-64 CPU; call before `import numpy`."""
    if "numpy" in sys.modules:
        raise RuntimeError("pin_numpy must run before numpy is imported")
    os.environ.pop("NPY_ENABLE_CPU_FEATURES", None)  # NumPy refuses both set at once
    os.environ["NPY_DISABLE_CPU_FEATURES"] = NUMPY_ABOVE_BASELINE


def pin_torch(torch, threads: int, kernels: str = "portable") -> bool:
    """Fix what torch decides at run time; True if the environment's kernel choice took effect."""
    torch.set_num_threads(threads)
    portable = kernels == "portable"
    torch.backends.mkldnn.enabled = not portable  # portable: im2col and MKL's pinned products
    torch.backends.nnpack.set_flags(False)
    return (torch.backends.cpu.get_cpu_capability() == "DEFAULT") == portable
