"""`rerec export`: a policy as a Hugging Face model folder with a model card, or a query split
as a dataset any trainer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerec_cli.app import app, state
from rerec_cli.output import out
from stages.core.errors import UserError
from stages.llm.prompts import FACT_MODES
from stages.sft.config import SFTConfig as SFT  # the prompt options: defaults and help


def _about(field: str) -> str:
    return str(SFT.model_fields[field].description).replace("[", "\\[")


@app.command("export")
def export_command(
    artifact: Annotated[
        str, typer.Argument(help="a policy or queries artifact (NAME\\[@VERSION])")
    ],
    folder: Annotated[Path, typer.Argument(help="folder to write (new or empty)")],
    merged: Annotated[
        bool,
        typer.Option(
            "--merged", help="policy: full weights with the adapter merged in (loads without peft)."
        ),
    ] = False,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="REPO",
            help="policy: also upload the folder to this Hub model repository (created if "
            "missing; your credentials: `hf auth login` or HF_TOKEN).",
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="policy: create the Hub repository private.")
    ] = False,
    splits: Annotated[
        list[str] | None,
        typer.Option("--split", help="queries: the splits to write, repeatable (default: all)."),
    ] = None,
    candidate_facts: Annotated[
        str,
        typer.Option(metavar="|".join(FACT_MODES), help="queries: " + _about("candidate_facts")),
    ] = SFT.model_fields["candidate_facts"].default,
    named_facts: Annotated[
        bool,
        typer.Option("--named-facts/--no-named-facts", help="queries: " + _about("named_facts")),
    ] = SFT.model_fields["named_facts"].default,
    history: Annotated[
        int, typer.Option(metavar="N", help="queries: " + _about("history"))
    ] = SFT.model_fields["history"].default,
    k: Annotated[int, typer.Option("--k", "-k", help="queries: " + _about("k"))] = 1,
) -> None:
    """Export a policy as a Hugging Face model folder (the LoRA adapter, or with --merged full
    weights; tokenizer, chat template, a model card with base model, data, training options,
    rewards and every eval with 95% intervals; rerec.json), or a queries artifact as one Parquet
    file per split in TRL's conversational format (`prompt` messages from rerec's prompt
    renderer, by default with sft's prompt options; `completion`; candidates, ground truths)."""
    store = state.store
    kind = store.resolve(artifact, check_schema=False, verify=False).manifest.kind
    if kind == "queries":
        if merged or push_to_hub or private:
            raise UserError("--merged, --push-to-hub and --private are for a policy, not queries")
        from stages.export.queries import export_queries

        counts = export_queries(
            store,
            artifact,
            folder,
            splits=splits,
            candidate_facts=candidate_facts,
            named_facts=named_facts,
            history=history,
            k=k,
        )
        written = ", ".join(f"{s}.parquet ({n:,} rows)" for s, n in counts.items())
        out.print(f"written: {folder}: {written}")
        return
    if kind != "policy":
        raise UserError(f"{artifact} is a {kind} artifact; export takes a policy or queries")
    from stages.export.policy import export_policy
    from stages.export.policy import push_to_hub as push

    written_to, full = export_policy(store, artifact, folder, merged=merged)
    out.print(f"written: {written_to} ({'full weights' if full else 'adapter'} + model card)")
    if push_to_hub:
        out.print(f"pushed: {push(written_to, push_to_hub, private=private)}")
