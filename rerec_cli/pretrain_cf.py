"""`rerec pretrain-cf`: LightGCN user and item embeddings from the graph's interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.output import out
from schemas.cf import METRICS
from stages.cf_config import PretrainCFConfig
from stages.config import field_help, resolve_config

H = PretrainCFConfig


@app.command("pretrain-cf")
def pretrain_cf_command(
    graph: Annotated[str | None, typer.Option(help=field_help(H, "graph"))] = None,
    output: Annotated[str | None, typer.Option(help=field_help(H, "output"))] = None,
    split: Annotated[str | None, typer.Option(help=field_help(H, "split"))] = None,
    embedding_dim: Annotated[int | None, typer.Option(help=field_help(H, "embedding_dim"))] = None,
    layers: Annotated[int | None, typer.Option(help=field_help(H, "layers"))] = None,
    lr: Annotated[float | None, typer.Option(help=field_help(H, "lr"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=field_help(H, "batch_size"))] = None,
    reg_weight: Annotated[float | None, typer.Option(help=field_help(H, "reg_weight"))] = None,
    epochs: Annotated[int | None, typer.Option(help=field_help(H, "epochs"))] = None,
    patience: Annotated[int | None, typer.Option(help=field_help(H, "patience"))] = None,
    seed: Annotated[int | None, typer.Option(help=field_help(H, "seed"))] = None,
    device: Annotated[str | None, typer.Option(help=field_help(H, "device"))] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of options.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch lines.")] = False,
) -> None:
    """Pretrain LightGCN (torch-geometric) on the graph's interactions, evaluate it by full
    ranking, and store user and item embeddings (the PAS reward and personalisation use them)."""
    from stages.pretrain_cf import epoch_printer, pretrain_cf  # torch: only when training

    cfg = resolve_config(
        PretrainCFConfig,
        section="pretrain-cf",
        config_file=config,
        overrides=dict(
            graph=graph,
            output=output,
            split=split,
            embedding_dim=embedding_dim,
            layers=layers,
            lr=lr,
            batch_size=batch_size,
            reg_weight=reg_weight,
            epochs=epochs,
            patience=patience,
            seed=seed,
            device=device,
        ),
    )
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
