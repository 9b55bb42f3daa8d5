"""`rerec pretrain-cf`: LightGCN user and item embeddings from the graph's interactions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.options import config_options
from rerec_cli.output import out
from schemas.cf import METRICS
from stages.cf.config import PretrainCFConfig


@app.command("pretrain-cf")
@config_options(PretrainCFConfig, "pretrain-cf", flags={"split": ("--cf-split", "--split")})
def pretrain_cf_command(
    cfg: PretrainCFConfig,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch lines.")] = False,
) -> None:
    """Pretrain LightGCN (torch-geometric) on the graph's interactions, evaluate it by full
    ranking, and store user and item embeddings (the PAS reward and personalisation use them)."""
    from stages.cf.stage import epoch_printer, pretrain_cf  # torch: only when training

    result = pretrain_cf(
        state.store,
        cfg,
        force=force,
        command=command_line(),
        on_epoch=None if quiet else epoch_printer(),
    )
    m = result.artifact.manifest.metrics
    status = (
        "already trained"
        if result.skipped
        else (
            f"trained {m['epochs']} epochs (best {m['best_epoch']}), "
            f"{m['median_train_seconds_per_epoch']:.2f} s/epoch"
        )
    )
    out.print(
        f"[bold]{result.artifact.ref}[/bold] ({status}): {m['users']:,} users, "
        f"{m['items']:,} items, {m['train_interactions']:,} training interactions"
    )
    table = Table(title="full-ranking metrics (training items masked)")
    table.add_column("split")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    for part in ("valid", "test"):
        table.add_row(part, *(f"{m[part][metric]:.4f}" for metric in METRICS))
    out.print(table)
