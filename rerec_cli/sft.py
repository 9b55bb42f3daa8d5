"""`rerec sft`: a supervised cold start on answers written from the graph; writes a policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.output import out
from rerec_cli.progress import StepProgress, evenly_spaced, print_prompt_tokens
from stages.config import field_help, resolve_config
from stages.sft_config import SFTConfig

H = SFTConfig


def _opt(name: str, *flags: str) -> Any:
    return typer.Option(*flags, help=field_help(H, name))


@app.command("sft")
def sft_command(
    queries: Annotated[str | None, _opt("queries")] = None,
    model: Annotated[str | None, _opt("model")] = None,
    output: Annotated[str | None, _opt("output")] = None,
    part: Annotated[str | None, _opt("part")] = None,
    families: Annotated[list[str] | None, _opt("families", "--family")] = None,
    limit: Annotated[int | None, _opt("limit")] = None,
    allow_mismatch: Annotated[bool | None, _opt("allow_mismatch", "--allow-mismatch")] = None,
    k: Annotated[int | None, _opt("k")] = None,
    candidate_facts: Annotated[str | None, _opt("candidate_facts")] = None,
    named_facts: Annotated[
        bool | None, _opt("named_facts", "--named-facts/--no-named-facts")
    ] = None,
    history: Annotated[int | None, _opt("history")] = None,
    epochs: Annotated[float | None, _opt("epochs")] = None,
    steps: Annotated[int | None, _opt("steps")] = None,
    batch_size: Annotated[int | None, _opt("batch_size")] = None,
    micro_batch: Annotated[int | None, _opt("micro_batch")] = None,
    lr: Annotated[float | None, _opt("lr")] = None,
    warmup_ratio: Annotated[float | None, _opt("warmup_ratio")] = None,
    max_length: Annotated[int | None, _opt("max_length")] = None,
    lora: Annotated[bool | None, _opt("lora", "--lora/--full")] = None,
    lora_r: Annotated[int | None, _opt("lora_r")] = None,
    lora_alpha: Annotated[int | None, _opt("lora_alpha")] = None,
    lora_dropout: Annotated[float | None, _opt("lora_dropout")] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    device: Annotated[str | None, _opt("device")] = None,
    precision: Annotated[str | None, _opt("precision")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of options.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Supervised cold start: fine-tune on the train split's answers written from the graph
    (restate the request, show the fitting candidate's facts, rule out a tempting wrong one,
    then \\boxed{title}), so that RL starts from a model that answers in the format. Writes a
    policy (full weights in model/) that `rerec train --model sft` starts from."""
    overrides = {k_: v for k_, v in locals().items() if k_ not in _NOT_CONFIG}
    cfg = resolve_config(SFTConfig, section="sft", config_file=config, overrides=overrides)
    from stages.sft import sft_policy  # torch, transformers, TRL: only when training

    with StepProgress("sft", _sft_stats, quiet) as on_step:
        result = sft_policy(
            state.store,
            cfg,
            force=force,
            command=command_line(),
            on_step=on_step,
            on_prompts=None if quiet else print_prompt_tokens,
        )
    art = result.artifact
    m = art.manifest.metrics
    if result.skipped:
        out.print(f"[bold]{art.ref}[/bold] (already trained; --force to retrain)")
    else:
        out.print(
            f"[bold]{art.ref}[/bold]: {m.get('steps', 0)} steps on {m.get('examples', 0):,} "
            f"examples, {m.get('tokens_per_second') or 0:.0f} tokens/s ({m.get('precision')})"
        )
    out.print(loss_curve(art.read("log")))


_NOT_CONFIG = {"config", "force", "quiet"}


def _sft_stats(row: dict[str, Any]) -> str:
    return f"loss {row['loss']:.3f}  {row['tokens_per_second']:.0f} tok/s"


def loss_curve(log: pl.DataFrame, rows: int = 12) -> Table:
    table = Table(title="supervised loss (completion tokens)")
    for col in ("step", "epoch", "loss", "token accuracy", "tokens/s"):
        table.add_column(col, justify="right")
    for r in evenly_spaced(log, rows).iter_rows(named=True):
        table.add_row(
            str(r["step"]),
            f"{r['epoch']:.2f}",
            f"{r['loss']:.3f}",
            f"{r['token_accuracy']:.3f}",
            f"{r['tokens_per_second']:.0f}",
        )
    return table
