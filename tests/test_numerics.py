"""MKL's conditional numerical reproducibility: asked for when `stages` is imported, read back
from MKL itself (`stages.core.numerics`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stages.core.numerics import blas_is_reproducible, blas_reproducibility, blas_warnings

pytestmark = pytest.mark.skipif(blas_reproducibility() == "no MKL", reason="torch without MKL")

REPORT = (
    "import torch; torch.randn(8, 8) @ torch.randn(8, 8); "  # MKL's first product: mode fixed
    "from stages.core.numerics import blas_reproducibility, blas_warnings; "
    "print(blas_reproducibility()); print(len(blas_warnings()))"
)


def mode_in_a_new_process(first: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}  # this process set it
    out = subprocess.run(
        [sys.executable, "-c", first + REPORT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\n")[:2]


def test_importing_stages_turns_strict_cnr_on() -> None:
    assert mode_in_a_new_process("import stages; ") == ["MKL CNR AUTO,STRICT", "0"]


def test_a_mode_the_user_chose_is_kept() -> None:
    mode = mode_in_a_new_process("import stages; ", MKL_CBWR="COMPATIBLE")
    assert mode == ["MKL CNR COMPATIBLE", "0"]


def test_mkl_used_before_stages_runs_without_cnr_and_the_manifest_says_so() -> None:
    # torch's first product comes before `stages` asks: MKL has fixed its mode by then
    assert mode_in_a_new_process("") == ["MKL CNR OFF", "1"]


def test_this_suite_runs_with_cnr() -> None:
    assert blas_is_reproducible() and blas_warnings() == []
    assert blas_reproducibility() == "MKL CNR AUTO,STRICT"
