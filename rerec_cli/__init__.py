"""The `rerec` command line: a thin Typer shell around `stages/`."""
