"""Book-Crossing (semicolon-separated, latin-1; ISBN keys)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from stages.graph.sources.common import SourceTables, interactions_table, users_table
from stages.graph.sources.table_files import (
    Dialect,
    check_unique,
    read_delimited,
    require_file,
)

_BX = Dialect(delim=";", encoding="latin-1", quote='"', escape="\\")
_ISBN = r"^(\d{9}[\dX]|\d{13})$"


def clean_isbn(col: pl.Expr) -> pl.Expr:
    """Upper case, keep digits and X; null unless it is then a 10- or 13-character ISBN."""
    cleaned = col.str.to_uppercase().str.replace_all(r"[^0-9X]", "")
    return pl.when(cleaned.str.contains(_ISBN)).then(cleaned).otherwise(None)


def normalise_person(col: pl.Expr) -> pl.Expr:
    """'J. K. Rowling' and 'J.K. Rowling' -> 'J.K. Rowling'; 'STEPHEN KING' -> 'Stephen King';
    HTML entities left by the crawl are decoded."""
    t = col.str.replace_all("&amp;", "&").str.replace_all(r"\s+", " ").str.strip_chars()
    for _ in range(2):  # "J. R. R." needs two passes: matches cannot overlap
        t = t.str.replace_all(r"\b(\p{Lu})\.\s+(\p{Lu})\.", "$1.$2.")
    shouting = (t == t.str.to_uppercase()) | (t == t.str.to_lowercase())
    return pl.when(shouting).then(t.str.to_titlecase()).otherwise(t)


def read_book_crossing(folder: Path, interactions: str) -> SourceTables:
    """Book-Crossing CSVs (`;`-separated, latin-1, backslash escapes). ``interactions`` is
    "explicit" (ratings 1-10 only) or "all" (implicit 0s kept, with a null rating)."""
    fix = "run `rerec fetch book-crossing`, or point --input-dir at the BX-*.csv files"
    ratings_p = require_file(folder / "BX-Book-Ratings.csv", "interactions file", fix)
    books_p = require_file(folder / "BX-Books.csv", "items file", fix)
    users_p = folder / "BX-Users.csv"
    ratings = read_delimited(
        ratings_p, _BX, {"User-ID": "BIGINT", "ISBN": "VARCHAR", "Book-Rating": "INTEGER"}
    )
    books = read_delimited(
        books_p,
        _BX,
        {
            "ISBN": "VARCHAR",
            "Book-Title": "VARCHAR",
            "Book-Author": "VARCHAR",
            "Year-Of-Publication": "VARCHAR",
            "Publisher": "VARCHAR",
        },
    )
    books = books.with_columns(item_key=clean_isbn(pl.col("ISBN")))
    bad_books = books.filter(pl.col("item_key").is_null()).height
    # The same ISBN written two ways ("0-345-..." and "0345...") becomes one book.
    books = books.filter(pl.col("item_key").is_not_null()).unique(
        "item_key", keep="first", maintain_order=True
    )
    year = pl.col("Year-Of-Publication").cast(pl.Int32, strict=False)
    books = books.with_columns(
        title=pl.col("Book-Title").str.replace_all("&amp;", "&").str.strip_chars(),
        year=pl.when(year.is_between(1000, 2025)).then(year).otherwise(None),
        author=normalise_person(pl.col("Book-Author")),
        publisher=pl.col("Publisher").str.replace_all("&amp;", "&").str.strip_chars(),
    )
    attrs = pl.concat(
        [
            books.select("item_key", relation=pl.lit(rel), value=pl.col(rel))
            for rel in ("author", "publisher")
        ]
    ).filter(pl.col("value").is_not_null() & (pl.col("value") != ""))
    ratings = ratings.with_columns(item_key=clean_isbn(pl.col("ISBN")))
    bad_isbn = ratings.filter(pl.col("item_key").is_null()).height
    ratings = ratings.filter(pl.col("item_key").is_not_null())
    if interactions == "explicit":
        ratings = ratings.filter(pl.col("Book-Rating") > 0)
        rating = pl.col("Book-Rating")
    else:
        rating = pl.when(pl.col("Book-Rating") > 0).then(pl.col("Book-Rating"))
    ratings = ratings.select(
        user_key="User-ID",
        item_key="item_key",
        rating=rating,
        timestamp=pl.lit(None, dtype=pl.Int64),
    )  # a book rated twice: the graph stage keeps the last rating and counts the other
    users = None
    if users_p.is_file():
        users = read_delimited(
            users_p, _BX, {"User-ID": "BIGINT", "Location": "VARCHAR", "Age": "VARCHAR"}
        )
        check_unique(users, "User-ID", users_p)
        age = pl.col("Age").cast(pl.Int32, strict=False)
        users = users_table(
            users.select(
                user_key="User-ID",
                location="Location",
                age=pl.when(age.is_between(5, 100)).then(age).otherwise(None),
            )
        )
    return SourceTables(
        domain="books",
        items=books.select("item_key", "title", "year"),
        item_attrs=attrs,
        users=users,
        interactions=interactions_table(ratings),
        items_path=books_p,
        interactions_path=ratings_p,
        dropped={"books_with_invalid_isbn": bad_books, "ratings_with_invalid_isbn": bad_isbn},
    )
