"""What every source adapter returns (`SourceTables`) and the tables they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

USER_COLUMNS = {
    "age": pl.Int32,
    "gender": pl.String,
    "occupation": pl.String,
    "location": pl.String,
}


@dataclass
class SourceTables:
    domain: str
    items: pl.DataFrame
    item_attrs: pl.DataFrame
    users: pl.DataFrame | None
    interactions: pl.DataFrame
    items_path: Path
    interactions_path: Path
    dropped: dict[str, int]


def users_table(df: pl.DataFrame) -> pl.DataFrame:
    """Fill the demographic columns a source lacks with nulls, in the standard order."""
    return df.with_columns(
        [pl.lit(None, dtype=t).alias(c) for c, t in USER_COLUMNS.items() if c not in df.columns]
    ).select("user_key", *[pl.col(c).cast(t) for c, t in USER_COLUMNS.items()])


def genre_attributes(items: pl.DataFrame, col: str, sep: str) -> pl.DataFrame:
    return (
        items.select("item_key", relation=pl.lit("genre"), value=pl.col(col).str.split(sep))
        .explode("value")
        .with_columns(pl.col("value").str.strip_chars())
        .filter(
            pl.col("value").is_not_null()
            & ~pl.col("value").is_in(["", "unknown", "(no genres listed)"])
        )
    )


def interactions_table(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        "user_key",
        "item_key",
        pl.col("rating").cast(pl.Float32),
        pl.col("timestamp").cast(pl.Int64),
    )
