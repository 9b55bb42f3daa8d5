"""`rerec eval`: a policy, base model or baseline on a query split."""

from __future__ import annotations

from typing import Annotated, Any

import polars as pl
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.options import config_options
from rerec_cli.output import JSON_HELP, err, out, print_json
from rerec_cli.progress import print_prompt_tokens
from schemas.eval import EVAL_METRICS
from stages.core.console import console
from stages.eval.config import EvalConfig


@app.command("eval")
@config_options(
    EvalConfig,
    "eval",
    flags={
        "families": ("--family",),
        "allow_mismatch": ("--allow-mismatch",),
        "use_vllm": ("--use-vllm",),
    },
)
def eval_command(
    cfg: EvalConfig,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Go on from the answers an interrupted run of this eval saved."
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-evaluate even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Evaluate a policy (default: the latest `policy`), a base model (--model) or a baseline
    (--baseline) on a query split; metrics per domain x family with 95% bootstrap intervals."""
    from stages.eval.stage import evaluate  # torch and transformers: only when evaluating

    # The bar starts with the first batch: a baseline or an evaluation already done generates
    # nothing, and an empty bar would still print a blank line on stderr when it stops.
    bar = Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task: list[Any] = []

    def on_batch(done: int, total: int) -> None:
        if not task:
            task.append(bar.add_task("eval", total=total))
            bar.start()
        bar.update(task[0], completed=done)

    try:
        result = evaluate(
            state.store,
            cfg,
            force=force,
            resume=resume,
            command=command_line(),
            on_batch=None if quiet else on_batch,
            on_prompts=None if quiet else print_prompt_tokens,
        )
    finally:
        if task:
            bar.stop()
    art = result.artifact
    status = " (already evaluated; --force to redo)" if result.skipped else ""
    n = art.manifest.metrics.get("queries", 0)
    console_ = err if as_json else out
    console_.print(f"[bold]{art.ref}[/bold]{status}: {n:,} queries")
    if as_json:
        metrics = art.read("metrics").to_dicts()
        print_json(
            {"artifact": art.ref, "skipped": result.skipped, "queries": n, "metrics": metrics}
        )
        return
    out.print(metrics_view(art.read("metrics")))


def metrics_view(metrics: pl.DataFrame) -> Table:
    table = Table(title="mean [95% bootstrap interval]")
    table.add_column("domain")
    table.add_column("family")
    table.add_column("n", justify="right")
    for m in EVAL_METRICS:
        table.add_column(m, justify="right")
    wide = metrics.pivot(
        on="metric", index=["domain", "family", "n"], values=["value", "ci_low", "ci_high"]
    )
    order = {"simple": 0, "medium": 1, "hard": 2, "interest": 3, "all": 9}
    rows = sorted(
        wide.iter_rows(named=True), key=lambda r: (r["domain"], order.get(r["family"], 5))
    )
    for r in rows:
        cells = []
        for m in EVAL_METRICS:
            v, lo, hi = r[f"value_{m}"], r[f"ci_low_{m}"], r[f"ci_high_{m}"]
            if m == "completion_tokens":
                cells.append(f"{v:.0f}")
            elif lo is None or lo != lo:
                cells.append(f"{v:.3f}")
            else:
                cells.append(f"{v:.3f} [{lo:.2f}, {hi:.2f}]")
        table.add_row(r["domain"], r["family"], str(r["n"]), *cells)
    return table
