"""Enriching movies with Wikidata film facts (director, writer, cast, language, country).

MovieLens titles and the Wikidata titles are written differently ("Usual Suspects, The (1995)"
vs "The Usual Suspects"; "Seven (Se7en)" vs "Se7en"; "Postino, Il" vs "Il Postino: The
Postman"), so both sides are reduced to normalised keys — several per title — and joined on key
with the release year allowed to differ by a configurable tolerance. All of it is Polars
expressions over whole columns.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl

from stages.core.errors import UserError
from stages.text.titles import normalise_title

FILM_RELATIONS = ("director", "writer", "cast", "language", "country")


def title_keys(items: pl.DataFrame) -> pl.DataFrame:
    """Normalised keys of catalogue titles: the title without its parenthesised part (rank 0)
    and the alternate title inside it, "Seven (Se7en)" -> "se7en" (rank 1)."""
    main = pl.col("title").str.replace(r"\s*\([^)]*\)\s*$", "")
    alternate = pl.col("title").str.extract(r"\(([^)]*)\)\s*$")
    keys = pl.concat(
        [
            items.select("item_key", "year", key=normalise_title(main), rank=pl.lit(0)),
            items.select("item_key", "year", key=normalise_title(alternate), rank=pl.lit(1)),
        ]
    )
    return keys.filter(pl.col("key").is_not_null() & (pl.col("key") != "")).unique()


def read_wikidata_films(db: Path) -> pl.DataFrame:
    """The `omdb` table of the fetched `wikidata-films` SQLite file (read-only)."""
    if not db.is_file():
        raise UserError(f"{db} does not exist; run `rerec fetch wikidata-films`")
    cols = ", ".join(
        f'"{c}"'
        for c in ("imdbID", "Title", "Year", "Director", "Writer", "Cast", "Language", "Country")
    )
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            films = pl.read_database(f"SELECT {cols} FROM omdb", con)
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db}: not a film-facts database ({exc})") from None
    return films.with_columns(pl.col("Year").cast(pl.Int32, strict=False)).filter(
        pl.col("Title").is_not_null()
    )


def _film_keys(films: pl.DataFrame) -> pl.DataFrame:
    """Keys of Wikidata titles: full title (rank 0), the part before a colon (rank 1), the title
    without a parenthesised part (rank 2)."""
    variants = [
        pl.col("Title"),
        pl.col("Title").str.extract(r"^([^:]+):"),
        pl.col("Title").str.replace(r"\s*\([^)]*\)\s*$", ""),
    ]
    keys = pl.concat(
        [
            films.select("imdbID", film_year="Year", key=normalise_title(v), film_rank=pl.lit(r))
            for r, v in enumerate(variants)
        ]
    )
    return keys.filter(pl.col("key").is_not_null() & (pl.col("key") != "")).unique()


def match_films(items: pl.DataFrame, films: pl.DataFrame, year_tolerance: int) -> pl.DataFrame:
    """Best Wikidata film for each item (``item_key``, ``title``, ``year``): joined on a
    normalised title key with ``|year - film year| <= year_tolerance``; ties go to the better key
    kinds, then the closer year, then the smaller imdbID. Returns ``item_key, imdbID``."""
    pairs = title_keys(items).join(_film_keys(films), on="key")
    gap = (pl.col("year") - pl.col("film_year")).abs()
    pairs = pairs.filter(gap <= year_tolerance).with_columns(gap=gap)
    return (
        pairs.sort(["item_key", "rank", "film_rank", "gap", "imdbID"])
        .unique("item_key", keep="first", maintain_order=True)
        .select("item_key", "imdbID")
    )


def _split_people(col: str) -> pl.Expr:
    return pl.col(col).str.split(",").list.eval(pl.element().str.strip_chars())


def film_attributes(matches: pl.DataFrame, films: pl.DataFrame, cast_top_n: int) -> pl.DataFrame:
    """Long table ``item_key, relation, value`` of the matched films' facts.

    Wikidata lists a film's cast unordered (alphabetically), so "the first N billed" is not in
    the data; the N kept are the film's most prolific actors across the whole table (the leads
    of a film are usually the actors with the longest filmographies), ties in listed order.
    """
    fields = {
        "director": "Director",
        "writer": "Writer",
        "cast": "Cast",
        "language": "Language",
        "country": "Country",
    }
    long = pl.concat(
        [
            films.select("imdbID", relation=pl.lit(rel), value=_split_people(col))
            .explode("value")
            .with_row_index("listed")
            for rel, col in fields.items()
        ]
    ).filter(pl.col("value").is_not_null() & (pl.col("value") != "") & (pl.col("value") != "N/A"))
    prolific = long.filter(pl.col("relation") == "cast").group_by("value").len("films")
    cast = (
        long.filter(pl.col("relation") == "cast")
        .join(prolific, on="value")
        .sort(["imdbID", "films", "listed"], descending=[False, True, False])
        .group_by("imdbID", maintain_order=True)
        .head(cast_top_n)
        .select(long.columns)
    )
    facts = pl.concat([long.filter(pl.col("relation") != "cast"), cast]).unique(
        ["imdbID", "relation", "value"]
    )
    return matches.join(facts, on="imdbID").select("item_key", "relation", "value")
