"""MovieLens as GroupLens ships it (ml-100k, ml-1m, the csv releases)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from stages.core.errors import UserError
from stages.graph.sources.common import (
    SourceTables,
    genre_attributes,
    interactions_table,
    users_table,
)
from stages.graph.sources.recbole import read_recbole_ml100k
from stages.graph.sources.table_files import (
    Dialect,
    check_unique,
    read_delimited,
    require_file,
)
from stages.text.titles import split_title_year

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)


def read_movielens(folder: Path) -> SourceTables:
    """Official GroupLens MovieLens files, variant detected from the file names:
    100K (`u.data`, `u.item`, `u.user`), 1M (`ratings.dat`, `movies.dat`, `users.dat`) or
    latest/20M/25M/32M (`ratings.csv`, `movies.csv`)."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"input folder {folder} {what}")
    if (folder / "u.data").is_file():
        return _read_ml_100k_official(folder)
    if (folder / "ratings.dat").is_file():
        return _read_ml_1m(folder)
    if (folder / "ratings.csv").is_file():
        return _read_ml_csv(folder)
    if (folder / "ml-100k.inter").is_file():
        return read_recbole_ml100k(folder)
    raise UserError(
        f"{folder}: no MovieLens files found (expected u.data, ratings.dat or ratings.csv)"
    )


def _read_ml_100k_official(folder: Path) -> SourceTables:
    fix = "the MovieLens-100K folder must hold u.data, u.item and u.user"
    inter_p = require_file(folder / "u.data", "interactions file", fix)
    item_p = require_file(folder / "u.item", "items file", fix)
    user_p = require_file(folder / "u.user", "users file", fix)
    inter = read_delimited(
        inter_p,
        Dialect(delim="\t", header=False, quote="", escape=""),
        {"user_key": "BIGINT", "item_key": "BIGINT", "rating": "DOUBLE", "timestamp": "BIGINT"},
        names=["user_key", "item_key", "rating", "timestamp"],
    )
    pipe = Dialect(delim="|", header=False, encoding="latin-1", quote="", escape="")
    item_names = ["item_key", "raw_title", "release_date", "video_date", "url", *ML100K_GENRES]
    items = read_delimited(
        item_p,
        pipe,
        {
            "item_key": "BIGINT",
            "raw_title": "VARCHAR",
            "release_date": "VARCHAR",
            **{g: "INTEGER" for g in ML100K_GENRES},
        },
        names=item_names,
    )
    check_unique(items, "item_key", item_p, "field 1")
    title, year = split_title_year(pl.col("raw_title"))
    release_year = pl.col("release_date").str.extract(r"(\d{4})$").cast(pl.Int32, strict=False)
    items = items.with_columns(title=title, year=year.fill_null(release_year))
    genre_attrs = (
        items.unpivot(
            index="item_key", on=list(ML100K_GENRES[1:]), variable_name="value", value_name="flag"
        )
        .filter(pl.col("flag") == 1)
        .select("item_key", relation=pl.lit("genre"), value="value")
    )
    users = read_delimited(
        user_p,
        pipe,
        {"user_key": "BIGINT", "age": "INTEGER", "gender": "VARCHAR", "occupation": "VARCHAR"},
        names=["user_key", "age", "gender", "occupation", "zip"],
    )
    check_unique(users, "user_key", user_p, "field 1")
    return SourceTables(
        "movies",
        items.select("item_key", "title", "year"),
        genre_attrs,
        users_table(users),
        interactions_table(inter),
        item_p,
        inter_p,
        {},
    )


def _read_ml_1m(folder: Path) -> SourceTables:
    fix = "the MovieLens-1M folder must hold ratings.dat and movies.dat (users.dat optional)"
    inter_p = require_file(folder / "ratings.dat", "interactions file", fix)
    item_p = require_file(folder / "movies.dat", "items file", fix)
    dat = Dialect(delim="::", header=False, encoding="latin-1", quote="", escape="")
    inter = read_delimited(
        inter_p,
        dat,
        {"user_key": "BIGINT", "item_key": "BIGINT", "rating": "DOUBLE", "timestamp": "BIGINT"},
        names=["user_key", "item_key", "rating", "timestamp"],
    )
    items = read_delimited(
        item_p,
        dat,
        {"item_key": "BIGINT", "raw_title": "VARCHAR", "genres": "VARCHAR"},
        names=["item_key", "raw_title", "genres"],
    )
    check_unique(items, "item_key", item_p, "field 1")
    title, year = split_title_year(pl.col("raw_title"))
    items = items.with_columns(title=title, year=year)
    users = None
    if (folder / "users.dat").is_file():
        user_p = folder / "users.dat"
        users = read_delimited(
            user_p,
            dat,
            {
                "user_key": "BIGINT",
                "gender": "VARCHAR",
                "age": "INTEGER",
                "occupation_code": "INTEGER",
            },
            names=["user_key", "gender", "age", "occupation_code", "zip"],
        )
        check_unique(users, "user_key", user_p, "field 1")
        users = users_table(
            users.with_columns(
                occupation=pl.col("occupation_code").replace_strict(
                    dict(enumerate(ML1M_OCCUPATIONS)), default=None, return_dtype=pl.String
                )
            )
        )
    return SourceTables(
        "movies",
        items.select("item_key", "title", "year"),
        genre_attributes(items, "genres", "|"),
        users,
        interactions_table(inter),
        item_p,
        inter_p,
        {},
    )


def _read_ml_csv(folder: Path) -> SourceTables:
    fix = "the MovieLens folder must hold ratings.csv and movies.csv"
    inter_p = require_file(folder / "ratings.csv", "interactions file", fix)
    item_p = require_file(folder / "movies.csv", "items file", fix)
    csv = Dialect(delim=",")
    inter = read_delimited(
        inter_p,
        csv,
        {"userId": "BIGINT", "movieId": "BIGINT", "rating": "DOUBLE", "timestamp": "BIGINT"},
    )
    inter = inter.rename({"userId": "user_key", "movieId": "item_key"})
    items = read_delimited(
        item_p, csv, {"movieId": "BIGINT", "title": "VARCHAR", "genres": "VARCHAR"}
    )
    items = items.rename({"movieId": "item_key", "title": "raw_title"})
    check_unique(items, "item_key", item_p, "movieId")
    title, year = split_title_year(pl.col("raw_title").str.strip_chars())
    items = items.with_columns(title=title, year=year)
    return SourceTables(
        "movies",
        items.select("item_key", "title", "year"),
        genre_attributes(items, "genres", "|"),
        None,
        interactions_table(inter),
        item_p,
        inter_p,
        {},
    )
