"""The graph from a source's tables: k-core, known items, duplicates, decades, the attribute
tables; its statistics and its DuckDB file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from schemas.graph import GRAPH
from stages.core.errors import UserError
from stages.graph.config import BuildGraphConfig
from stages.graph.film_facts import film_attributes, match_films
from stages.graph.sources.common import SourceTables


@dataclass
class Graph:
    items: pl.DataFrame
    attributes: pl.DataFrame
    item_attributes: pl.DataFrame
    users: pl.DataFrame
    interactions: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def k_core(interactions: pl.DataFrame, k: int) -> pl.DataFrame:
    """Drop users and items with fewer than ``k`` interactions until none is left."""
    if k <= 1:
        return interactions
    current = interactions
    while True:
        users = current.group_by("user_key").len().filter(pl.col("len") >= k)
        items = current.group_by("item_key").len().filter(pl.col("len") >= k)
        kept = current.join(
            users.select("user_key"), on="user_key", how="semi", maintain_order="left"
        ).join(items.select("item_key"), on="item_key", how="semi", maintain_order="left")
        if kept.height == current.height:
            return kept
        current = kept


def _check_known_items(src: SourceTables, policy: str) -> tuple[pl.DataFrame, int]:
    inter = src.interactions
    unknown = inter.join(src.items.select("item_key"), on="item_key", how="anti")
    if unknown.height == 0:
        return inter, 0
    if policy == "error":
        first = (
            inter.with_row_index("row")
            .join(unknown.select("item_key").unique(), on="item_key", how="semi")
            .sort("row")
            .row(0, named=True)
        )
        raise UserError(
            f"{src.interactions_path} row {first['row'] + 1}: item {first['item_key']!r} is not "
            f"in {src.items_path} ({unknown.height:,} such interactions); add the items, or "
            "drop them with --unknown-items drop"
        )
    kept = inter.join(
        unknown.select("item_key").unique(), on="item_key", how="anti", maintain_order="left"
    )
    return kept, unknown.height


def drop_duplicate_interactions(inter: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """One interaction per (user, item): the one with the latest timestamp, and among equal or
    missing timestamps the one later in the file (a re-rating replaces the earlier rating).
    The kept rows stay in file order; returns them and how many were dropped."""
    keys = ["user_key", "item_key"]
    if not inter.select(pl.struct(keys).is_duplicated().any()).item():
        return inter, 0
    kept = (
        inter.with_row_index("__order")
        .sort(["timestamp", "__order"], nulls_last=False)
        .unique(keys, keep="last")
        .sort("__order")
        .drop("__order")
    )
    return kept, inter.height - kept.height


def _decades(items: pl.DataFrame) -> pl.DataFrame:
    return items.filter(pl.col("year").is_not_null()).select(
        "item_key",
        relation=pl.lit("decade"),
        value=((pl.col("year") // 10) * 10).cast(pl.String) + "s",
    )


def assemble(
    src: SourceTables,
    cfg: BuildGraphConfig,
    films: pl.DataFrame | None,
) -> Graph:
    """Turn an adapter's tables into the graph (dense ids, attribute nodes, statistics)."""
    policy = cfg.unknown_items or ("drop" if cfg.source == "book-crossing" else "error")
    inter, unknown = _check_known_items(src, policy)
    if inter.filter(pl.col("user_key").is_null() | pl.col("item_key").is_null()).height:
        raise UserError(f"{src.interactions_path}: rows with an empty user or item id")
    inter, duplicates = drop_duplicate_interactions(inter)
    before_core = inter.height
    inter = k_core(inter, cfg.k_core)

    items = src.items
    if cfg.k_core > 1:
        items = items.join(
            inter.select("item_key").unique(), on="item_key", how="semi", maintain_order="left"
        )
    items = items.with_row_index("item_id").with_columns(pl.col("item_id").cast(pl.Int32))

    # Users in the users file's order, then any others in order of first interaction.
    seen = inter.select("user_key").unique(maintain_order=True)
    if src.users is not None:
        listed = src.users.join(seen, on="user_key", how="semi", maintain_order="left")
        extra = seen.join(
            src.users.select("user_key"), on="user_key", how="anti", maintain_order="left"
        )
        users = pl.concat([listed, extra], how="diagonal_relaxed")
    else:
        users = seen
    users = users.with_row_index("user_id").with_columns(pl.col("user_id").cast(pl.Int32))
    for col, dtype in (
        ("age", pl.Int32),
        ("gender", pl.String),
        ("occupation", pl.String),
        ("location", pl.String),
    ):
        if col not in users.columns:
            users = users.with_columns(pl.lit(None, dtype=dtype).alias(col))

    # Attributes: the source's own, the film facts, and the decade.
    parts = [src.item_attrs.select("item_key", "relation", "value"), _decades(items)]
    matches = None
    if films is not None:
        matches = match_films(items.select("item_key", "title", "year"), films, cfg.year_tolerance)
        parts.append(film_attributes(matches, films, cfg.cast_top_n))
    long = (
        pl.concat(
            [p.with_columns(pl.col("item_key").cast(items.schema["item_key"])) for p in parts]
        )
        .join(items.select("item_key", "item_id"), on="item_key")
        .unique(["item_id", "relation", "value"])
    )
    attributes = (
        long.group_by("relation", "value")
        .agg(item_count=pl.len().cast(pl.Int32))
        .sort(["relation", "item_count", "value"], descending=[False, True, False])
        .with_row_index("attr_id")
        .with_columns(pl.col("attr_id").cast(pl.Int32))
    )
    item_attributes = (
        long.join(attributes.select("attr_id", "relation", "value"), on=["relation", "value"])
        .select("item_id", "attr_id")
        .sort("item_id", "attr_id")
    )

    external = (
        matches.rename({"imdbID": "external_id"})
        if matches is not None
        else pl.DataFrame(schema={"item_key": items.schema["item_key"], "external_id": pl.String})
    )
    items_out = items.join(external, on="item_key", how="left", maintain_order="left").select(
        "item_id",
        source_id=pl.col("item_key").cast(pl.String),
        title="title",
        year=pl.col("year").cast(pl.Int32),
        domain=pl.lit(src.domain),
        external_id="external_id",
    )
    interactions_out = (
        # In the source's order (leave-last-out breaks equal timestamps by it).
        inter.join(users.select("user_key", "user_id"), on="user_key", maintain_order="left")
        .join(items.select("item_key", "item_id"), on="item_key", maintain_order="left")
        .select("user_id", "item_id", "rating", "timestamp")
    )
    users_out = users.select(
        "user_id",
        source_id=pl.col("user_key").cast(pl.String),
        age="age",
        gender="gender",
        occupation="occupation",
        location="location",
    )
    graph = Graph(items_out, attributes, item_attributes, users_out, interactions_out)
    graph.stats = graph_stats(
        graph,
        dropped={
            **src.dropped,
            "duplicate_interactions": duplicates,
            "interactions_with_unknown_item": unknown,
            "interactions_removed_by_k_core": before_core - inter.height,
        },
    )
    return graph


def graph_stats(graph: Graph, dropped: dict[str, int]) -> dict[str, Any]:
    """Counts per relation, attribute degree distribution, coverage of items and interactions."""
    n_items, n_inter = graph.items.height, graph.interactions.height
    per_item = graph.interactions.group_by("item_id").len("n")
    relations: dict[str, Any] = {}
    edges = graph.item_attributes.join(graph.attributes.select("attr_id", "relation"), on="attr_id")
    for relation in sorted(graph.attributes.get_column("relation").unique().to_list()):
        attrs = graph.attributes.filter(pl.col("relation") == relation)
        covered = edges.filter(pl.col("relation") == relation).select("item_id").unique()
        covered_inter = per_item.join(covered, on="item_id").get_column("n").sum()
        degree = attrs.get_column("item_count")
        relations[relation] = {
            "attributes": attrs.height,
            "edges": int(attrs.get_column("item_count").sum()),
            "items_covered": covered.height,
            "item_coverage": round(covered.height / max(n_items, 1), 4),
            "interaction_coverage": round(float(covered_inter or 0) / max(n_inter, 1), 4),
            "degree_min": int(degree.min() or 0),
            "degree_median": float(degree.median() or 0),
            "degree_p90": float(degree.quantile(0.9, "nearest") or 0),
            "degree_max": int(degree.max() or 0),
        }
    matched = graph.items.filter(pl.col("external_id").is_not_null()).select("item_id")
    matched_inter = per_item.join(matched, on="item_id").get_column("n").sum()
    return {
        "items": n_items,
        "users": graph.users.height,
        "interactions": n_inter,
        "attributes": graph.attributes.height,
        "item_attribute_edges": graph.item_attributes.height,
        "density": round(n_inter / max(n_items * max(graph.users.height, 1), 1), 6),
        "external_matches": matched.height,
        "external_item_coverage": round(matched.height / max(n_items, 1), 4),
        "external_interaction_coverage": round(float(matched_inter or 0) / max(n_inter, 1), 4),
        "relations": relations,
        "dropped": dropped,
    }


def write_duckdb(path: Path, graph: Graph) -> None:
    """The same tables in one DuckDB file, plus a readable view of item facts."""
    con = duckdb.connect(str(path))
    try:
        for name in GRAPH.tables:
            frame = getattr(graph, name).to_arrow()  # noqa: F841 (read by DuckDB by name)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.execute(
            "CREATE VIEW item_facts AS SELECT i.item_id, i.title, i.year, a.relation, a.value "
            "FROM item_attributes ia JOIN items i USING (item_id) JOIN attributes a USING (attr_id)"
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()
