"""The `graph` artifact: items, their attributes, users and interactions, as Parquet tables and
as one DuckDB file (`graph.duckdb`) holding the same tables.

Ids are dense integers assigned by the graph stage; `source_id` keeps the id the source data
used (MovieLens movie id, ISBN, ...), so every row stays traceable.
"""

from __future__ import annotations

import polars as pl

from schemas.base import ArtifactSchema, TableSchema

ITEMS = TableSchema(
    "items",
    {
        "item_id": pl.Int32,
        "source_id": pl.String,
        "title": pl.String,
        "year": pl.Int32,  # null when unknown
        "domain": pl.String,  # "movies", "books", or what a generic source names
        "external_id": pl.String,  # matched Wikidata/OMDb film (imdbID); null when unmatched
    },
    "one row per catalogue item",
)

ATTRIBUTES = TableSchema(
    "attributes",
    {
        "attr_id": pl.Int32,
        "relation": pl.String,  # genre, director, writer, cast, language, country, decade, ...
        "value": pl.String,
        "item_count": pl.Int32,  # degree: how many items carry it
    },
    "attribute nodes of the item-attribute graph",
)

ITEM_ATTRIBUTES = TableSchema(
    "item_attributes",
    {"item_id": pl.Int32, "attr_id": pl.Int32},
    "edges item -> attribute",
)

USERS = TableSchema(
    "users",
    {
        "user_id": pl.Int32,
        "source_id": pl.String,
        "age": pl.Int32,
        "gender": pl.String,
        "occupation": pl.String,
        "location": pl.String,
    },
    "users with at least one interaction; demographics null where the source has none",
)

INTERACTIONS = TableSchema(
    "interactions",
    {
        "user_id": pl.Int32,
        "item_id": pl.Int32,
        "rating": pl.Float32,  # null for implicit feedback
        "timestamp": pl.Int64,  # seconds since the epoch; null when the source has none
    },
    "user-item interactions",
)

GRAPH = ArtifactSchema(
    name="graph",
    version=1,
    kind="graph",
    description="item-attribute graph and user-item interactions (Parquet + DuckDB)",
    produced_by="rerec build-graph --force",
    tables={t.name: t for t in (ITEMS, ATTRIBUTES, ITEM_ATTRIBUTES, USERS, INTERACTIONS)},
    files=("graph.duckdb",),
    derived_files=("graph.duckdb",),
    variants=True,
)
