"""Input adapters for the graph stage. Each reads one kind of source and returns the same
`SourceTables`; the graph stage never looks at file formats.

    items         item_key, title, year                    (one row per item, keys unique)
    item_attrs    item_key, relation, value                (attributes the source itself has)
    users         user_key, age, gender, occupation, location
    interactions  user_key, item_key, rating, timestamp

Keys keep the source's own ids (MovieLens ids as integers, ISBNs as strings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from stages.errors import UserError
from stages.film_facts import split_title_year
from stages.table_files import (
    ROW,
    ColumnKind,
    Dialect,
    check_filled,
    check_no_nul,
    check_unique,
    fail_on_first,
    read_delimited,
    read_parquet,
    require_file,
    typed_column,
    with_rows,
)

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


def _users(df: pl.DataFrame) -> pl.DataFrame:
    """Fill the demographic columns a source lacks with nulls, in the standard order."""
    return df.with_columns(
        [pl.lit(None, dtype=t).alias(c) for c, t in USER_COLUMNS.items() if c not in df.columns]
    ).select("user_key", *[pl.col(c).cast(t) for c, t in USER_COLUMNS.items()])


def _genres(items: pl.DataFrame, col: str, sep: str) -> pl.DataFrame:
    return (
        items.select("item_key", relation=pl.lit("genre"), value=pl.col(col).str.split(sep))
        .explode("value")
        .with_columns(pl.col("value").str.strip_chars())
        .filter(
            pl.col("value").is_not_null()
            & ~pl.col("value").is_in(["", "unknown", "(no genres listed)"])
        )
    )


def _interactions(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        "user_key",
        "item_key",
        pl.col("rating").cast(pl.Float32),
        pl.col("timestamp").cast(pl.Int64),
    )


# ------------------------------------------------------------------ MovieLens, RecBole atomic
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
        item_attrs=_genres(items, "genres", " "),
        users=_users(users),
        interactions=_interactions(inter),
        items_path=item_p,
        interactions_path=inter_p,
        dropped={},
    )


# ------------------------------------------------------------------ MovieLens, official files
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
        _users(users),
        _interactions(inter),
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
        users = _users(
            users.with_columns(
                occupation=pl.col("occupation_code").replace_strict(
                    dict(enumerate(ML1M_OCCUPATIONS)), default=None, return_dtype=pl.String
                )
            )
        )
    return SourceTables(
        "movies",
        items.select("item_key", "title", "year"),
        _genres(items, "genres", "|"),
        users,
        _interactions(inter),
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
        _genres(items, "genres", "|"),
        None,
        _interactions(inter),
        item_p,
        inter_p,
        {},
    )


# ------------------------------------------------------------------ Book-Crossing
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
        users = _users(
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
        interactions=_interactions(ratings),
        items_path=books_p,
        interactions_path=ratings_p,
        dropped={"books_with_invalid_isbn": bad_books, "ratings_with_invalid_isbn": bad_isbn},
    )


# ------------------------------------------------------------------ generic
# Our column -> how its values are read (see `typed_column`). `--column OURS=THEIRS` renames;
# a column the file has under our name is read without one.
GENERIC_COLUMNS: dict[str, ColumnKind] = {
    "item_id": "id",
    "title": "text",
    "year": "integer",
    "user_id": "id",
    "rating": "number",
    "timestamp": "timestamp",
    "relation": "text",
    "value": "text",
    "age": "integer",
    "gender": "text",
    "occupation": "text",
    "location": "text",
}
_CSV_TYPES = {"number": "DOUBLE", "timestamp": "BIGINT"}  # the rest is read as text


def read_table(
    path: Path,
    columns: Mapping[str, str],
    delimiter: str | None,
    encoding: str = "utf-8",
    *,
    optional: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """A Parquet, CSV or TSV file (by suffix), columns given as source name -> DuckDB type;
    ``optional`` columns are read where the file has them."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if path.suffix.lower() == ".parquet":
        return read_parquet(path, list(columns), list(optional or {}))
    delim = delimiter or ("\t" if path.suffix.lower() in {".tsv", ".tab"} else ",")
    return read_delimited(path, Dialect(delim=delim, encoding=encoding), columns, optional=optional)


def read_generic(
    *,
    domain: str,
    items_path: Path,
    interactions_path: Path,
    item_attributes_path: Path | None,
    users_path: Path | None,
    columns: Mapping[str, str],
    delimiter: str | None,
    encoding: str = "utf-8",
) -> SourceTables:
    """A user's own catalogue: items, long-format item attributes (item, relation, value),
    interactions and optional users, with ``columns`` mapping our names to theirs.

    Bad input is one error naming the file, the row (data rows from 1, header not counted)
    and the column: a file with no rows (items, interactions); an empty or NUL-holding id; an
    empty title or relation; a NUL byte in a title, relation or value; a rating that is NaN,
    infinite or negative; a value of the wrong type (a list id, a rating that is not a number).
    Years and ages that are not whole numbers are read as unknown (null), as before.
    Attribute rows are dropped and counted instead, as sparse exports have them: rows for items
    not in the items file, rows with an empty value, and repeated (item, relation, value) rows.
    Repeated interactions are dropped and counted by the graph stage (`assemble`).
    """
    unknown = [c for c in columns if c not in GENERIC_COLUMNS]
    if unknown:
        raise UserError(
            f"--column {unknown[0]}={columns[unknown[0]]}: no column '{unknown[0]}' to map; "
            f"use one of {', '.join(GENERIC_COLUMNS)} (config: columns)"
        )

    def name(ours: str) -> str:
        return columns.get(ours, ours)

    def read(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> pl.DataFrame:
        """Our columns under our names, typed, plus ROW. An optional column is read when it is
        mapped with --column (then it must exist) or when the file has it under our name."""
        needed = [*required, *(c for c in optional if c in columns)]
        maybe = [c for c in optional if c not in columns]

        def csv_type(ours: str) -> str:
            return _CSV_TYPES.get(GENERIC_COLUMNS[ours], "VARCHAR")

        raw = with_rows(
            read_table(
                path,
                {name(c): csv_type(c) for c in needed},
                delimiter,
                encoding,
                optional={name(c): csv_type(c) for c in maybe},
            )
        )
        present = [c for c in (*required, *optional) if name(c) in raw.columns]
        return raw.select(
            ROW,
            *[typed_column(raw, name(c), GENERIC_COLUMNS[c], path).alias(c) for c in present],
        )

    def no_rows(df: pl.DataFrame, path: Path, what: str) -> None:
        if df.height == 0:
            raise UserError(f"{path}: no rows, only a header; {what}")

    def ids(df: pl.DataFrame, path: Path, *cols: str) -> None:
        for c in cols:
            check_filled(df, c, path, name(c), c.replace("_", " "))
            check_no_nul(df, c, path, name(c))

    items = read(items_path, ("item_id", "title"), ("year",))
    no_rows(items, items_path, "the items file needs at least one item")
    ids(items, items_path, "item_id")
    check_filled(items, "title", items_path, name("title"), "title")
    check_no_nul(items, "title", items_path, name("title"))
    items = items.select(
        item_key="item_id",
        title="title",
        year=pl.col("year") if "year" in items.columns else pl.lit(None, dtype=pl.Int32),
    )
    check_unique(items, "item_key", items_path, name("item_id"))

    inter = read(interactions_path, ("user_id", "item_id"), ("rating", "timestamp"))
    no_rows(inter, interactions_path, "the interactions file needs at least one interaction")
    ids(inter, interactions_path, "user_id", "item_id")
    if "rating" in inter.columns:
        fail_on_first(
            inter,
            pl.col("rating").is_not_null()
            & (~pl.col("rating").is_finite() | (pl.col("rating") < 0)),
            lambda r: (
                f"{interactions_path} row {r[ROW]}: column '{name('rating')}' holds "
                f"{r['rating']}; a rating is a finite number >= 0 (leave it empty for none)"
            ),
        )
    inter = inter.select(
        user_key="user_id",
        item_key="item_id",
        rating=pl.col("rating") if "rating" in inter.columns else pl.lit(None, pl.Float64),
        timestamp=pl.col("timestamp") if "timestamp" in inter.columns else pl.lit(None, pl.Int64),
    )

    dropped = {
        "attribute_rows_unknown_item": 0,
        "attribute_rows_empty_value": 0,
        "duplicate_attribute_rows": 0,
    }
    attrs = pl.DataFrame(schema={"item_key": pl.String, "relation": pl.String, "value": pl.String})
    if item_attributes_path is not None:
        path = item_attributes_path
        raw = read(path, ("item_id", "relation", "value"), ())
        ids(raw, path, "item_id")
        check_filled(raw, "relation", path, name("relation"), "relation")
        check_no_nul(raw, "relation", path, name("relation"))
        check_no_nul(raw, "value", path, name("value"))
        raw = raw.select(item_key="item_id", relation="relation", value="value")
        known = raw.join(items.select("item_key"), on="item_key", how="semi")
        filled = known.filter(pl.col("value").str.strip_chars() != "")  # also drops nulls
        attrs = filled.unique(maintain_order=True)
        dropped = {
            "attribute_rows_unknown_item": raw.height - known.height,
            "attribute_rows_empty_value": known.height - filled.height,
            "duplicate_attribute_rows": filled.height - attrs.height,
        }

    users = None
    if users_path is not None:
        demographics = tuple(USER_COLUMNS)
        users = read(users_path, ("user_id",), demographics)
        ids(users, users_path, "user_id")
        users = users.rename({"user_id": "user_key"}).drop(ROW)
        check_unique(users, "user_key", users_path, name("user_id"))
        users = _users(users)
    return SourceTables(
        domain, items, attrs, users, _interactions(inter), items_path, interactions_path, dropped
    )
