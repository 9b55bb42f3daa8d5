"""ReRec's logic: one subpackage per pipeline stage, `core` for what every stage shares.

Nothing here imports Typer; `rerec_cli` is the thin command layer on top."""
