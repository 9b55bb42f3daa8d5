"""`rerec make-queries`: RecBench+-style query splits with candidate sets."""

from __future__ import annotations

import contextlib
from typing import Annotated

import polars as pl
import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.options import config_options
from rerec_cli.output import out
from schemas.queries import FAMILIES, SPLITS
from stages.core.console import console
from stages.core.errors import UserError
from stages.llm.prompts import prompt_token_stats, render_user_message
from stages.queries.config import MakeQueriesConfig
from stages.queries.stage import check_artifact, example_rows, make_queries


@app.command("make-queries")
@config_options(
    MakeQueriesConfig,
    "make-queries",
    flags={"families": ("--family",), "users_disjoint": ("--users-disjoint/--users-shared",)},
)
def make_queries_command(
    cfg: MakeQueriesConfig,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress spinner.")] = False,
    check: Annotated[
        str | None,
        typer.Option(
            "--check",
            help="Only re-check an existing queries artifact (NAME\\[@VERSION]) against "
            "its graph, and exit non-zero if any guarantee fails.",
        ),
    ] = None,
    show_prompt: Annotated[
        bool, typer.Option("--show-prompt", help="Also print the rendered prompt of each example.")
    ] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="Also print the test prompts' token counts (median / max per family) for each "
            "candidate-facts mode, with this model's tokenizer and chat template: a model "
            "artifact (smollm2-135m), a folder or a hub id.",
        ),
    ] = None,
) -> None:
    """Generate simple / medium (implicit) / hard (misinformed) / interest queries with
    1 positive + N negatives from the graph and users' histories; every query is checked."""
    if check is not None:
        art, problems = check_artifact(state.store, check)
        _print_checks(art.ref, problems)
        if any(problems.values()):
            raise UserError(
                f"{art.ref} failed its checks: "
                + ", ".join(f"{k} {v}" for k, v in problems.items() if v)
            )
        return
    with contextlib.nullcontext() if quiet else console.status("generating queries") as status:
        result = make_queries(
            state.store,
            cfg,
            force=force,
            command=command_line(),
            progress=None if status is None else status.update,
        )
    art = result.artifact
    m = art.manifest.metrics
    state_text = (
        "already generated" if result.skipped else f"generated in {art.manifest.wall_seconds:.1f} s"
    )
    out.print(f"[bold]{art.ref}[/bold] ({state_text}): {m['total']:,} {m['domain']} queries")
    table = Table(title="queries by family and split")
    table.add_column("family")
    for split in SPLITS:
        table.add_column(split, justify="right")
    for fam in FAMILIES:
        if any(f"{fam}/{s}" in m["counts"] for s in SPLITS):
            table.add_row(fam, *(f"{m['counts'].get(f'{fam}/{s}', 0):,}" for s in SPLITS))
    out.print(table)
    _print_checks(art.ref, m["checks"])
    for row in example_rows(art.read("queries")):
        out.print(
            f"\n[bold]{row['family']}[/bold] ({row['query_id']}): {row['text']}",
            markup=True,
            highlight=False,
        )
        out.print(
            f"  answer: {row['positive_titles'][0]}  "
            f"(candidate {row['positive_index'] + 1} of {len(row['candidate_item_ids'])})",
            markup=False,
        )
        if show_prompt:
            out.print(render_user_message(row), markup=False)
    if tokenizer is not None:
        out.print(token_table(art.read("queries"), tokenizer))


PROMPT_VARIANTS = (
    ("titles only", {}),
    ("compact facts", {"candidate_facts": "compact"}),
    ("compact + named facts", {"candidate_facts": "compact", "named_facts": True}),
    ("index + named facts", {"candidate_facts": "index", "named_facts": True}),
    ("index-only + named facts", {"candidate_facts": "index-only", "named_facts": True}),
    ("full facts", {"candidate_facts": "full"}),
    ("full + named facts", {"candidate_facts": "full", "named_facts": True}),
)


def token_table(queries: pl.DataFrame, model: str) -> Table:
    """Prompt tokens of the test split (or of every query when there is none) per prompt
    option and family."""
    from transformers import AutoTokenizer

    from stages.llm.models import resolve_model

    path = resolve_model(state.store, model)[1]
    tok = AutoTokenizer.from_pretrained(path)
    test = queries.filter(pl.col("split") == "test")
    rows = test if test.height else queries
    table = Table(title=f"prompt tokens, median / max ({model} chat template)")
    table.add_column("prompt")
    stats = [(label, prompt_token_stats(rows, tok, **opts)) for label, opts in PROMPT_VARIANTS]
    families = stats[0][1]["family"].to_list()
    for fam in families:
        table.add_column(fam, justify="right")
    for label, frame in stats:
        cells = {
            r["family"]: f"{r['median']:.0f} / {r['max']}" for r in frame.iter_rows(named=True)
        }
        table.add_row(label, *(cells[f] for f in families))
    return table


def _print_checks(ref: str, problems: dict[str, int]) -> None:
    failed = {k: v for k, v in problems.items() if v}
    if failed:
        out.print(
            f"[red]checks failed for {ref}[/red]: "
            + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in failed.items())
        )
    else:
        out.print(f"checks passed for {ref}: {len(problems)} guarantees recomputed from the graph")
