"""RecBole atomic files (ml-100k as RecBole ships it: .inter, .item, .user, .kg, .link)."""

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
from stages.graph.sources.table_files import (
    Dialect,
    check_unique,
    header_fields,
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


# RecBole field names (without their `:type`) read as the title and the year of an item; the
# other token and token_seq fields of the .item file become attributes, named as below.
TITLE_FIELDS = ("title", "movie_title", "book_title", "item_name", "name", "app_name")
YEAR_FIELDS = ("release_year", "year", "publish_year", "year_of_publication")
RELATION_NAMES = {
    "class": "genre", "genre": "genre", "genres": "genre", "categories": "genre",
    "book_author": "author", "author": "author", "publisher": "publisher",
    "director": "director", "writer": "writer", "cast": "cast", "language": "language",
    "country": "country", "brand": "brand", "sales_type": "category",
}  # fmt: skip
USER_FIELDS = {"age": "age", "gender": "gender", "occupation": "occupation", "location": "location"}


def _fields(path: Path, raw: Dialect) -> dict[str, str]:
    """`name:type` header fields of a RecBole atomic file -> {name: type}."""
    fields = {}
    for header in header_fields(path, raw):
        name, sep, kind = header.partition(":")
        if not sep or kind not in ("token", "token_seq", "float", "float_seq"):
            raise UserError(
                f"{path}: header field {header!r} is not RecBole's NAME:TYPE (token, token_seq, "
                "float, float_seq)"
            )
        fields[name] = kind
    return fields


def read_recbole_atomic(folder: Path, domain: str) -> SourceTables:
    """Any RecBole atomic dataset folder: `NAME.inter` (user_id, item_id, optional rating and
    timestamp), `NAME.item` (a title field, an optional year field, and every other token or
    token_seq field as attributes: a genre list (class, genre, genres, categories) splits on
    spaces into `genre` values; any other field is one value, "Woody Allen" stays whole),
    optional `NAME.user` (age, gender, occupation, location)."""
    inters = sorted(folder.glob("*.inter")) if folder.is_dir() else []
    if len(inters) != 1:
        found = ", ".join(p.name for p in inters) or "none"
        raise UserError(f"{folder}: expected one RecBole .inter file, found {found}")
    stem = inters[0].stem
    fix = "a RecBole atomic dataset folder holds NAME.inter and NAME.item (NAME.user optional)"
    inter_p = inters[0]
    item_p = require_file(folder / f"{stem}.item", "items file", fix)
    raw = Dialect(delim="\t", quote="", escape="")
    inter_fields = _fields(inter_p, raw)
    for need in ("user_id", "item_id"):
        if need not in inter_fields:
            raise UserError(f"{inter_p}: no {need} field (found: {', '.join(inter_fields)})")
    wanted = {"user_id:token": "VARCHAR", "item_id:token": "VARCHAR"}
    optional = {"rating:float": "DOUBLE", "timestamp:float": "DOUBLE"}
    inter = read_delimited(inter_p, raw, wanted, optional=optional)
    inter = inter.rename({"user_id:token": "user_key", "item_id:token": "item_key"})
    inter = inter.rename({c: c.split(":")[0] for c in optional if c in inter.columns})
    for col in ("rating", "timestamp"):
        if col not in inter.columns:
            inter = inter.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))

    item_fields = _fields(item_p, raw)
    title_field = next((f for f in TITLE_FIELDS if f in item_fields), None)
    if "item_id" not in item_fields or title_field is None:
        raise UserError(
            f"{item_p}: needs item_id and a title field ({', '.join(TITLE_FIELDS)}); "
            f"found: {', '.join(item_fields)}"
        )
    year_field = next((f for f in YEAR_FIELDS if f in item_fields), None)
    attr_fields = [
        f
        for f, kind in item_fields.items()
        if kind in ("token", "token_seq") and f not in ("item_id", title_field, year_field)
    ]
    columns = {f"{f}:{item_fields[f]}": "VARCHAR" for f in ["item_id", title_field, *attr_fields]}
    if year_field:
        columns[f"{year_field}:{item_fields[year_field]}"] = "VARCHAR"
    items = read_delimited(item_p, raw, columns)
    items = items.rename({c: c.split(":")[0] for c in items.columns}).rename(
        {"item_id": "item_key"}
    )
    check_unique(items, "item_key", item_p, "item_id:token")
    title, title_year = split_title_year(pl.col(title_field))
    year = (  # "1995" or "1995.0" (a float field)
        pl.col(year_field).cast(pl.Float64, strict=False).cast(pl.Int32, strict=False)
        if year_field
        else pl.lit(None)
    )
    items = items.with_columns(title=title, year=year.cast(pl.Int32).fill_null(title_year))
    attrs = [
        items.select(
            "item_key",
            relation=pl.lit(RELATION_NAMES.get(f, f)),
            value=pl.col(f).str.split(" ")
            if item_fields[f] == "token_seq" and RELATION_NAMES.get(f) == "genre"
            else pl.concat_list(f),
        )
        .explode("value")
        .with_columns(pl.col("value").str.strip_chars())
        .filter(pl.col("value").is_not_null() & ~pl.col("value").is_in(["", "unknown"]))
        for f in attr_fields
    ]
    item_attrs = (
        pl.concat(attrs)
        if attrs
        else pl.DataFrame(schema={"item_key": pl.String, "relation": pl.String, "value": pl.String})
    )

    users = None
    user_p = folder / f"{stem}.user"
    if user_p.is_file():
        user_fields = _fields(user_p, raw)
        keep = {f"{f}:{user_fields[f]}": "VARCHAR" for f in USER_FIELDS if f in user_fields}
        users = read_delimited(user_p, raw, {"user_id:token": "VARCHAR", **keep})
        users = users.rename({c: c.split(":")[0] for c in users.columns}).rename(
            {"user_id": "user_key"}
        )
        check_unique(users, "user_key", user_p, "user_id:token")
        if "age" in users.columns:
            users = users.with_columns(pl.col("age").cast(pl.Int32, strict=False))
        users = users_table(users)
    return SourceTables(
        domain=domain,
        items=items.select("item_key", "title", "year"),
        item_attrs=item_attrs.unique(maintain_order=True),
        users=users,
        interactions=interactions_table(inter),
        items_path=item_p,
        interactions_path=inter_p,
        dropped={},
    )
