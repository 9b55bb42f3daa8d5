"""`rerec build-graph`: the item–attribute graph and the user–item interactions.

Recipe: read the source through its adapter, enrich movies with Wikidata film facts, check the
interactions against the catalogue, optionally k-core filter, assign dense ids, derive the
attribute nodes (source attributes + film facts + decade), and write the tables as Parquet and
into one DuckDB file. Every step is a Polars expression or a DuckDB statement over whole tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl
from pydantic import Field, model_validator

from schemas import check_name
from schemas.graph import GRAPH
from stages.config import StageConfig
from stages.errors import UserError
from stages.film_facts import film_attributes, match_films, read_wikidata_films
from stages.graph_sources import (
    SourceTables,
    read_book_crossing,
    read_generic,
    read_movielens,
    read_recbole_ml100k,
)
from stages.store import Artifact, ArtifactStore, ArtifactWriter, BuildResult, sha256_file

Source = Literal["ml-100k", "movielens", "book-crossing", "generic"]


class BuildGraphConfig(StageConfig):
    """Options of `rerec build-graph`."""

    source: Source = Field(
        default="ml-100k",
        description="ml-100k: the fetched MovieLens-100K; movielens: official GroupLens files "
        "(100K u.*, 1M *.dat, latest/25M/32M *.csv) in --input-dir; book-crossing: the fetched "
        "Book-Crossing (or BX-*.csv in --input-dir); generic: your own files (items_path, "
        "interactions_path, ...)",
    )
    input_dir: Path | None = Field(
        default=None, description="folder with the source files instead of the fetched artifact"
    )
    output: str | None = Field(
        default=None,
        description="artifact name to write: 'graph' or 'graph-SOMETHING' "
        "(default: graph for movies, graph-books for Book-Crossing, graph-DOMAIN for generic)",
    )
    enrich: bool = Field(
        default=True, description="add Wikidata film facts to movies (needs wikidata-films)"
    )
    cast_top_n: int = Field(
        default=3, ge=0, description="cast members kept per film (the most prolific actors)"
    )
    year_tolerance: int = Field(
        default=1, ge=0, description="years a MovieLens and a Wikidata release may differ by"
    )
    k_core: int = Field(
        default=0,
        ge=0,
        description="keep only users and items with at least this many interactions, "
        "iteratively (0: off; the catalogue keeps every item)",
    )
    book_interactions: Literal["explicit", "all"] = Field(
        default="explicit",
        description="Book-Crossing: explicit keeps ratings 1-10; all also keeps the implicit "
        "0s (stored with a null rating)",
    )
    unknown_items: Literal["error", "drop"] | None = Field(
        default=None,
        description="an interaction whose item is not in the catalogue: error, or drop it "
        "(default: error; drop for Book-Crossing, whose ratings name books it lacks)",
    )
    domain: str = Field(default="items", description="generic: the domain name of the items")
    items_path: Path | None = Field(default=None, description="generic: items file")
    interactions_path: Path | None = Field(default=None, description="generic: interactions")
    item_attributes_path: Path | None = Field(
        default=None, description="generic: item attributes in long form (item, relation, value)"
    )
    users_path: Path | None = Field(default=None, description="generic: users file")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="generic: our column -> your column, for item_id, title, year, user_id, "
        "rating, timestamp, relation, value, age, gender, occupation, location",
    )
    delimiter: str | None = Field(
        default=None, description="generic: delimiter of CSV files (default by suffix)"
    )
    encoding: Literal["utf-8", "latin-1"] = Field(
        default="utf-8", description="generic: text encoding of CSV files"
    )

    @model_validator(mode="after")
    def _check(self) -> BuildGraphConfig:
        if self.source == "movielens" and self.input_dir is None:
            raise ValueError(
                "source 'movielens' reads official files: give their folder "
                "with --input-dir (config: input_dir)"
            )
        if self.source == "generic" and (self.items_path is None or self.interactions_path is None):
            raise ValueError(
                "source 'generic' needs --items and --interactions "
                "(config: items_path, interactions_path)"
            )
        if self.output is not None:
            check_name(self.output, "graph")
        return self

    @property
    def artifact_name(self) -> str:
        if self.output:
            return self.output
        if self.source == "book-crossing":
            return "graph-books"
        if self.source == "generic":
            return f"graph-{self.domain}"
        return "graph"


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


def input_artifacts(cfg: BuildGraphConfig, store: ArtifactStore) -> dict[str, Artifact]:
    """The fetched artifacts this build reads (none for files given by path)."""
    inputs: dict[str, Artifact] = {}
    if cfg.input_dir is None and cfg.source in ("ml-100k", "book-crossing"):
        inputs[cfg.source] = store.resolve(cfg.source)
    if cfg.enrich and cfg.source in ("ml-100k", "movielens"):
        inputs["wikidata-films"] = store.resolve("wikidata-films")
    return inputs


def read_source(cfg: BuildGraphConfig, inputs: dict[str, Artifact]) -> SourceTables:
    if cfg.source == "ml-100k":
        folder = cfg.input_dir or inputs["ml-100k"].path / "ml-100k"
        return read_recbole_ml100k(folder)
    if cfg.source == "movielens":
        assert cfg.input_dir is not None
        return read_movielens(cfg.input_dir)
    if cfg.source == "book-crossing":
        return read_book_crossing(
            cfg.input_dir or inputs["book-crossing"].path, cfg.book_interactions
        )
    assert cfg.items_path is not None and cfg.interactions_path is not None
    return read_generic(
        domain=cfg.domain,
        items_path=cfg.items_path,
        interactions_path=cfg.interactions_path,
        item_attributes_path=cfg.item_attributes_path,
        users_path=cfg.users_path,
        columns=cfg.columns,
        delimiter=cfg.delimiter,
        encoding=cfg.encoding,
    )


def external_files(cfg: BuildGraphConfig) -> dict[str, str]:
    """sha256 of every input file outside the store, so a changed file makes a new version."""
    paths: list[Path] = []
    if cfg.input_dir is not None:
        if not cfg.input_dir.is_dir():
            what = "is a file, not a folder" if cfg.input_dir.exists() else "does not exist"
            raise UserError(f"input folder {cfg.input_dir} {what}")
        paths += sorted(p for p in cfg.input_dir.iterdir() if p.is_file())
    for p in (cfg.items_path, cfg.interactions_path, cfg.item_attributes_path, cfg.users_path):
        if p is not None:
            if not p.is_file():
                raise UserError(f"{p} does not exist")
            paths.append(p)
    return {str(p.resolve()): sha256_file(p) for p in paths}


def build_graph(
    store: ArtifactStore,
    cfg: BuildGraphConfig,
    *,
    force: bool = False,
    command: str | None = None,
) -> BuildResult:
    files = external_files(cfg)
    inputs = input_artifacts(cfg, store)

    def build(writer: ArtifactWriter) -> None:
        t0 = time.perf_counter()
        src = read_source(cfg, inputs)
        films = None
        if "wikidata-films" in inputs and src.domain == "movies":
            films = read_wikidata_films(inputs["wikidata-films"].path / "movies.db")
        t1 = time.perf_counter()
        graph = assemble(src, cfg, films)
        t2 = time.perf_counter()
        for name in GRAPH.tables:
            writer.write_table(name, getattr(graph, name))
        write_duckdb(writer.file("graph.duckdb"), graph)
        t3 = time.perf_counter()
        writer.metrics.update(graph.stats)
        writer.metrics["timings"] = {
            "read_seconds": round(t1 - t0, 3),
            "assemble_seconds": round(t2 - t1, 3),
            "write_seconds": round(t3 - t2, 3),
        }

    config = {**cfg.model_dump(mode="json"), "external_files": files}
    return store.build(
        cfg.artifact_name,
        config=config,
        inputs=list(inputs.values()),
        build=build,
        force=force,
        command=command,
    )
