"""`rerec build-graph`: the item–attribute graph and interactions, into DuckDB and Parquet."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.options import config_options
from rerec_cli.output import out
from stages.core.errors import UserError
from stages.graph.config import BuildGraphConfig
from stages.graph.stage import build_graph


def _columns(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    mapping = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours or not theirs:
            raise UserError(f"--column {pair!r}: write it as OURS=THEIRS, e.g. item_id=movieId")
        ours, theirs = ours.strip(), theirs.strip()
        if mapping.get(ours, theirs) != theirs:
            raise UserError(
                f"--column {ours}= is given twice ({mapping[ours]!r} and {theirs!r}); keep one"
            )
        mapping[ours] = theirs
    return mapping


@app.command("build-graph")
@config_options(
    BuildGraphConfig,
    "build-graph",
    flags={
        "items_path": ("--items",),
        "interactions_path": ("--interactions",),
        "item_attributes_path": ("--item-attributes",),
        "users_path": ("--users",),
    },
    parsers={"columns": _columns},
)
def build_graph_command(
    cfg: BuildGraphConfig,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            metavar="OURS=THEIRS",
            help="generic: OURS=THEIRS column mapping, repeatable "
            "(e.g. --column item_id=movieId) [config: columns]",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if it exists.")] = False,
) -> None:
    """Build the item-attribute graph (DuckDB + Parquet) from MovieLens + Wikidata film facts,
    Book-Crossing, or your own files, and print its statistics."""
    result = build_graph(state.store, cfg, force=force, command=command_line())
    print_graph_stats(
        result.artifact.ref,
        result.artifact.manifest.metrics,
        result.skipped,
        result.artifact.manifest.wall_seconds,
    )


def print_graph_stats(ref: str, m: dict, skipped: bool, seconds: float) -> None:
    status = "already built" if skipped else f"built in {seconds:.2f} s"
    out.print(
        f"[bold]{ref}[/bold] ({status}): {m['items']:,} items, {m['users']:,} users, "
        f"{m['interactions']:,} interactions, {m['attributes']:,} attributes, "
        f"{m['item_attribute_edges']:,} item-attribute edges"
    )
    if m.get("external_matches"):
        out.print(
            f"Wikidata film facts: {m['external_matches']:,} items matched "
            f"({m['external_item_coverage']:.1%} of items, "
            f"{m['external_interaction_coverage']:.1%} of interactions)"
        )
    table = Table(title="relations")
    for col in (
        "relation",
        "attributes",
        "edges",
        "item coverage",
        "interaction coverage",
        "degree median",
        "p90",
        "max",
    ):
        table.add_column(col, justify="left" if col == "relation" else "right")
    for rel, r in m["relations"].items():
        table.add_row(
            rel,
            f"{r['attributes']:,}",
            f"{r['edges']:,}",
            f"{r['item_coverage']:.1%}",
            f"{r['interaction_coverage']:.1%}",
            f"{r['degree_median']:g}",
            f"{r['degree_p90']:g}",
            f"{r['degree_max']:,}",
        )
    out.print(table)
    dropped = {k: v for k, v in m.get("dropped", {}).items() if v}
    if dropped:
        out.print(
            "dropped: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in dropped.items())
        )
