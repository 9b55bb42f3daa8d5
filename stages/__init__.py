"""ReRec's logic: one subpackage per pipeline stage, `core` for what every stage shares.

Nothing here imports Typer; `rerec_cli` is the thin command layer on top. Importing it asks
MKL for run-to-run reproducible float math (`stages.core.numerics`)."""

from stages.core.numerics import request_reproducible_blas

request_reproducible_blas()
