"""`rerec build-graph`: the item–attribute graph and interactions, into DuckDB and Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.output import out
from stages.build_graph import BuildGraphConfig, Source, build_graph
from stages.config import field_help, resolve_config
from stages.errors import UserError

H = BuildGraphConfig


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
def build_graph_command(
    source: Annotated[Source | None, typer.Option(help=field_help(H, "source"))] = None,
    input_dir: Annotated[Path | None, typer.Option(help=field_help(H, "input_dir"))] = None,
    output: Annotated[str | None, typer.Option(help=field_help(H, "output"))] = None,
    enrich: Annotated[
        bool | None, typer.Option("--enrich/--no-enrich", help=field_help(H, "enrich"))
    ] = None,
    cast_top_n: Annotated[int | None, typer.Option(help=field_help(H, "cast_top_n"))] = None,
    year_tolerance: Annotated[
        int | None, typer.Option(help=field_help(H, "year_tolerance"))
    ] = None,
    k_core: Annotated[int | None, typer.Option(help=field_help(H, "k_core"))] = None,
    book_interactions: Annotated[
        str | None, typer.Option(help=field_help(H, "book_interactions"))
    ] = None,
    unknown_items: Annotated[str | None, typer.Option(help=field_help(H, "unknown_items"))] = None,
    domain: Annotated[str | None, typer.Option(help=field_help(H, "domain"))] = None,
    items: Annotated[Path | None, typer.Option("--items", help=field_help(H, "items_path"))] = None,
    interactions: Annotated[
        Path | None, typer.Option("--interactions", help=field_help(H, "interactions_path"))
    ] = None,
    item_attributes: Annotated[
        Path | None, typer.Option("--item-attributes", help=field_help(H, "item_attributes_path"))
    ] = None,
    users: Annotated[Path | None, typer.Option("--users", help=field_help(H, "users_path"))] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="generic: OURS=THEIRS column mapping, repeatable "
            "(e.g. --column item_id=movieId) [config: columns]",
        ),
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help=field_help(H, "delimiter"))] = None,
    encoding: Annotated[str | None, typer.Option(help=field_help(H, "encoding"))] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of options.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if it exists.")] = False,
) -> None:
    """Build the item-attribute graph (DuckDB + Parquet) from MovieLens + Wikidata film facts,
    Book-Crossing, or your own files, and print its statistics."""
    cfg = resolve_config(
        BuildGraphConfig,
        section="build-graph",
        config_file=config,
        overrides=dict(
            source=source,
            input_dir=input_dir,
            output=output,
            enrich=enrich,
            cast_top_n=cast_top_n,
            year_tolerance=year_tolerance,
            k_core=k_core,
            book_interactions=book_interactions,
            unknown_items=unknown_items,
            domain=domain,
            items_path=items,
            interactions_path=interactions,
            item_attributes_path=item_attributes,
            users_path=users,
            columns=_columns(column),
            delimiter=delimiter,
            encoding=encoding,
        ),
    )
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
