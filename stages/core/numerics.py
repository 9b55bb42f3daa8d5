"""Float math that repeats from one process to the next on a CPU: MKL's conditional numerical
reproducibility (CNR).

torch's CPU builds do their matrix products in Intel MKL, which, unless told otherwise, picks
code paths by where its operands happen to lie in memory. Where they lie changes from process
to process with things that have nothing to do with the run: the size of the environment, the
order Python's string hashing (``PYTHONHASHSEED``) gives to sets, so the same product of the
same numbers can round differently in two runs. Found on the experiment's real run (a 48-step
sft→rerec, SmolLM2-135M, LoRA, bf16): resumed from the same checkpoint, with the same weights,
rollouts and advantages, step 12's LoRA gradients differed by up to 2% between two values of
``PYTHONHASHSEED`` (and a third time with only a longer environment variable added); its
gradient norm read 0.3148091 or 0.3148241, the next step sampled other tokens, and from there
the run went its own way. With ``MKL_CBWR=AUTO,STRICT`` the three processes gave the same
gradients bit for bit.

So `stages` asks for it as it is imported (`request_reproducible_blas`), before torch makes
its first MKL call (MKL reads the variable then, not at import); a value the user set is kept.
`blas_reproducibility` reads back what MKL actually runs with, for the manifests of the stages
that train or generate. AUTO keeps MKL's fastest code path for the CPU, so another CPU type
may still round differently; CNR does not cover oneDNN's kernels, which do not depend on
alignment in this way.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

VARIABLE = "MKL_CBWR"
REPRODUCIBLE = "AUTO,STRICT"

# mkl_cbwr.h
_STRICT = 0x10000
_BRANCHES = {
    0: "OFF",
    1: "OFF",  # MKL_CBWR_BRANCH_OFF: CNR not asked for (MKL's default)
    2: "AUTO",
    3: "COMPATIBLE",
    4: "SSE2",
    6: "SSSE3",
    7: "SSE4_1",
    8: "SSE4_2",
    9: "AVX",
    10: "AVX2",
    12: "AVX512",
    14: "AVX512_E1",
}


def request_reproducible_blas() -> None:
    """Ask MKL for run-to-run reproducible results (``MKL_CBWR=AUTO,STRICT``) unless the user
    chose a mode. Takes effect when it runs before torch's first MKL call."""
    os.environ.setdefault(VARIABLE, REPRODUCIBLE)


@functools.cache
def _cbwr_get() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    import torch

    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(str(library)).mkl_serv_cbwr_get
    except (OSError, AttributeError):  # another platform, or a torch built without MKL
        return None
    get.restype = ctypes.c_int
    get.argtypes = [ctypes.c_int]
    return get


def _cbwr_mode() -> int | None:
    """MKL's CNR mode (``mkl_cbwr.h``), or None where torch has no MKL."""
    get = _cbwr_get()
    return None if get is None else get(-1)  # MKL_CBWR_ALL


def blas_reproducibility() -> str:
    """The mode MKL runs with, as MKL reports it: ``"MKL CNR AUTO,STRICT"`` when products repeat
    bit for bit from run to run on this CPU type; ``"MKL CNR OFF"`` when they may not; or
    ``"no MKL"`` (a torch build without it, where this does not apply)."""
    mode = _cbwr_mode()
    if mode is None:
        return "no MKL"
    branch = _BRANCHES.get(mode & ~_STRICT, f"branch {mode & ~_STRICT}")
    return f"MKL CNR {branch}{',STRICT' if mode & _STRICT else ''}"


def blas_is_reproducible() -> bool:
    """Whether MKL's products repeat from run to run (CNR on, or no MKL to ask)."""
    mode = _cbwr_mode()
    return mode is None or _BRANCHES.get(mode & ~_STRICT) != "OFF"


def blas_warnings() -> list[str]:
    """The manifest warning of a stage that trains or generates while MKL's products may not
    repeat from run to run (MKL was used before `stages` was imported, or the user turned CNR
    off); none otherwise."""
    if blas_is_reproducible():
        return []
    return [
        f"{blas_reproducibility()}: MKL's float math may round differently from run to run "
        f"(import stages before torch's first product, or set {VARIABLE}={REPRODUCIBLE})"
    ]
