"""RecBole atomic files (ml-100k as RecBole ships it: .inter, .item, .user, .kg, .link)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from stages.graph.sources.common import (
    SourceTables,
    genre_attributes,
    interactions_table,
    users_table,
)
from stages.graph.sources.table_files import (
    Dialect,
    check_unique,
    read_delimited,
    require_file,
)
from stages.text.titles import split_title_year


def read_recbole_ml100k(folder: Path) -> SourceTables:
    """MovieLens-100K as RecBole's atomic files (`ml-100k.inter/.item/.user`, tab-separated,
    typed headers such as `user_id:token`), i.e. what `rerec fetch ml-100k` stores."""
    fix = "run `rerec fetch ml-100k`, or point --input-dir at a folder holding them"
    inter_p = require_file(folder / "ml-100k.inter", "interactions file", fix)
    item_p = require_file(folder / "ml-100k.item", "items file", fix)
    user_p = require_file(folder / "ml-100k.user", "users file", fix)
    raw = Dialect(delim="\t", quote="", escape="")
    inter = read_delimited(
        inter_p,
        raw,
        {
            "user_id:token": "BIGINT",
            "item_id:token": "BIGINT",
            "rating:float": "DOUBLE",
            "timestamp:float": "DOUBLE",
        },
    )
    items = read_delimited(
        item_p,
        raw,
        {
            "item_id:token": "BIGINT",
            "movie_title:token_seq": "VARCHAR",
            "release_year:token": "VARCHAR",
            "class:token_seq": "VARCHAR",
        },
    )
    users = read_delimited(
        user_p,
        raw,
        {
            "user_id:token": "BIGINT",
            "age:token": "VARCHAR",
            "gender:token": "VARCHAR",
            "occupation:token": "VARCHAR",
        },
    )
    items = items.rename({"item_id:token": "item_key", "class:token_seq": "genres"})
    check_unique(items, "item_key", item_p, "item_id:token")
    # A few RecBole titles still carry "(1995)" and a broken year column ("V"); take the
    # year from the title where the column has none.
    title, title_year = split_title_year(pl.col("movie_title:token_seq"))
    items = items.with_columns(
        title=title,
        year=pl.col("release_year:token").cast(pl.Int32, strict=False).fill_null(title_year),
    )
    users = users.rename(
        {"user_id:token": "user_key", "gender:token": "gender", "occupation:token": "occupation"}
    )
    check_unique(users, "user_key", user_p, "user_id:token")
    users = users.with_columns(age=pl.col("age:token").cast(pl.Int32, strict=False))
    inter = inter.rename(
        {
            "user_id:token": "user_key",
            "item_id:token": "item_key",
            "rating:float": "rating",
            "timestamp:float": "timestamp",
        }
    )
    return SourceTables(
        domain="movies",
        items=items.select("item_key", "title", "year"),
        item_attrs=genre_attributes(items, "genres", " "),
        users=users_table(users),
        interactions=interactions_table(inter),
        items_path=item_p,
        interactions_path=inter_p,
        dropped={},
    )
