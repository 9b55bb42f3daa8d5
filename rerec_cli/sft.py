"""`rerec sft`: a supervised cold start on answers written from the graph; writes a policy."""

from __future__ import annotations

from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.options import PASS_THROUGH, PeftOption, TrlOption, config_options
from rerec_cli.output import out
from rerec_cli.progress import StepProgress, evenly_spaced, print_prompt_tokens
from stages.sft.config import SFTConfig


@app.command("sft")
@config_options(
    SFTConfig,
    "sft",
    flags={
        "families": ("--family",),
        "allow_mismatch": ("--allow-mismatch",),
        "lora": ("--lora/--full",),
    },
    parsers=PASS_THROUGH,
)
def sft_command(
    cfg: SFTConfig,
    trl: TrlOption = None,
    peft: PeftOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Supervised cold start: fine-tune on the train split's answers written from the graph
    (restate the request, show the fitting candidate's facts, rule out a tempting wrong one,
    then \\boxed{title}), so that RL starts from a model that answers in the format. Writes a
    policy (full weights in model/) that `rerec train --model sft` starts from."""
    from stages.sft.stage import sft_policy  # torch, transformers, TRL: only when training

    with StepProgress("sft", _sft_stats, quiet) as on_step:
        result = sft_policy(
            state.store,
            cfg,
            force=force,
            resume=resume,
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
