"""`rerec export`: a policy as a standalone Hugging Face folder with a model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerec_cli.app import app, state
from rerec_cli.output import out


@app.command("export")
def export_command(
    policy: Annotated[str, typer.Argument(help="policy artifact (NAME[@VERSION])")],
    folder: Annotated[Path, typer.Argument(help="folder to write (new or empty)")],
    merged: Annotated[
        bool,
        typer.Option(
            "--merged", help="Full weights with the adapter merged in (loads without peft)."
        ),
    ] = False,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="REPO",
            help="Also upload the folder to this Hub model repository (created if missing; "
            "your credentials: `hf auth login` or HF_TOKEN).",
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the Hub repository private.")
    ] = False,
) -> None:
    """Write a policy as a Hugging Face model folder: the LoRA adapter (or, with --merged, full
    weights), tokenizer and chat template, a model card (base model, data, training options,
    rewards, every eval of it with 95% intervals) and rerec.json (its lineage)."""
    from stages.export.policy import export_policy
    from stages.export.policy import push_to_hub as push

    written = export_policy(state.store, policy, folder, merged=merged)
    out.print(f"written: {written} ({'full weights' if merged else 'adapter'} + model card)")
    if push_to_hub:
        out.print(f"pushed: {push(written, push_to_hub, private=private)}")
