"""`rerec train`: GRPO / ReRec / REINFORCE++ on the training queries; writes a policy."""

from __future__ import annotations

from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.options import PASS_THROUGH, PeftOption, TrlOption, config_options
from rerec_cli.output import out
from rerec_cli.progress import StepProgress, evenly_spaced, print_prompt_tokens
from stages.rl.config import TrainConfig


@app.command("train")
@config_options(
    TrainConfig,
    "train",
    flags={
        "families": ("--family",),
        "num_generations": ("--num-generations", "-G"),
        "allow_mismatch": ("--allow-mismatch",),
        "lora": ("--lora/--full",),
        "use_vllm": ("--use-vllm",),
    },
    parsers=PASS_THROUGH,
)
def train_command(
    cfg: TrainConfig,
    trl: TrlOption = None,
    peft: PeftOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a recommendation policy with GRPO on TRL (LoRA by default): dual-graph rewards,
    RAAE token-level advantages and the online curriculum (--algo rerec), or the grpo and
    reinforce++ baselines. Scale out with `accelerate launch -m rerec_cli train ...`."""
    from stages.rl.stage import train_policy  # torch, transformers, TRL: only when training

    with StepProgress("training", _train_stats, quiet) as on_step:
        result = train_policy(
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
            f"[bold]{art.ref}[/bold]: {m.get('steps', 0)} steps over {m.get('epochs', 0)} "
            f"epoch(s), {m.get('training_queries', 0):,} training queries, "
            f"{m.get('median_seconds_per_step', 0):.2f} s/step (median)"
        )
    out.print(reward_curve(art.read("log")))


def _train_stats(row: dict[str, Any]) -> str:
    return f"reward {row['reward']:.3f}  accuracy {row['accuracy']:.2f}  epoch {row['epoch']}"


def reward_curve(log: pl.DataFrame, rows: int = 20) -> Table:
    """The training curve as a table (at most ``rows`` evenly spaced steps, always the last)."""
    table = Table(
        title="training curve (means over each step's completions; group sd: the spread of "
        "rewards within a prompt's group, which is what GRPO learns from)"
    )
    columns = {  # heading -> log column
        "reward": "reward",
        "group sd": "reward_std",
        "accuracy": "accuracy",
        "ndcg": "ndcg",
        "qas": "qas",
        "pas": "pas",
        "format ok": "valid_format",
        "penalised": "penalised_token_share",
        "kl": "kl",
    }
    for col in ("step", "epoch", *columns):
        table.add_column(col, justify="right")
    for r in evenly_spaced(log, rows).iter_rows(named=True):
        table.add_row(
            str(r["step"]),
            str(r["epoch"]),
            *("—" if r.get(c) is None else f"{r[c]:.3f}" for c in columns.values()),
        )
    return table
