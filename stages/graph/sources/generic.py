"""Any table files with named columns
(`rerec build-graph --source generic --column OURS=THEIRS`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from stages.core.errors import UserError
from stages.graph.sources.common import USER_COLUMNS, SourceTables, interactions_table, users_table
from stages.graph.sources.table_files import (
    ROW,
    ColumnKind,
    Dialect,
    check_filled,
    check_no_nul,
    check_unique,
    fail_on_first,
    read_delimited,
    read_parquet,
    stored_columns,
    typed_column,
    with_rows,
)

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
    """A Parquet, CSV or TSV file (by suffix), or a Hugging Face `datasets` folder
    (`save_to_disk`); columns given as source name -> DuckDB type; ``optional`` columns are
    read where the file has them."""
    if path.is_dir():
        return read_hf_dataset(path, list(columns), list(optional or {}))
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if path.suffix.lower() == ".parquet":
        return read_parquet(path, list(columns), list(optional or {}))
    delim = delimiter or ("\t" if path.suffix.lower() in {".tsv", ".tab"} else ",")
    return read_delimited(path, Dialect(delim=delim, encoding=encoding), columns, optional=optional)


def read_hf_dataset(
    folder: Path, columns: Sequence[str], optional: Sequence[str] = ()
) -> pl.DataFrame:
    """``columns`` (and ``optional`` ones it has) of a Hugging Face `datasets` folder written
    by `save_to_disk`, with the checks of a Parquet file."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise UserError(
            f"{folder} is a DatasetDict; point at one split's folder ({', '.join(splits)})"
        )
    if not (folder / "state.json").is_file():
        raise UserError(
            f"{folder} is a folder but not a Hugging Face dataset (no state.json from "
            "save_to_disk); give a CSV, TSV or Parquet file, or a dataset folder"
        )
    from datasets import load_from_disk

    dataset = load_from_disk(str(folder))
    stored = stored_columns(folder, dataset.column_names, columns)
    wanted = list(dict.fromkeys([*columns, *(c for c in optional if c in stored)]))
    df = pl.from_arrow(dataset.select_columns([stored[c] for c in wanted]).data.table)
    assert isinstance(df, pl.DataFrame)
    return df.rename({stored[c]: c for c in wanted if stored[c] != c})


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
        users = users_table(users)
    return SourceTables(
        domain,
        items,
        attrs,
        users,
        interactions_table(inter),
        items_path,
        interactions_path,
        dropped,
    )
