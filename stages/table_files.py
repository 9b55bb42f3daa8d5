"""Reading users' table files (CSV/TSV/`::`-separated/Parquet) with DuckDB, and turning every
way they can be wrong into one line that names the file, the row or column, and the fix.

DuckDB reads latin-1, multi-byte delimiters and backslash escapes (Book-Crossing, MovieLens-1M)
that Polars' CSV reader does not, and it is fast on the 25M-row files; the results are handed
on as Polars frames.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from stages.errors import UserError


@dataclass(frozen=True)
class Dialect:
    """How a delimited file is written."""

    delim: str = ","
    header: bool = True
    encoding: str = "utf-8"  # or "latin-1"
    quote: str = '"'  # "" for none
    escape: str = '"'  # "" for none

    def describe(self) -> str:
        delim = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'", "::": "'::'"}.get(
            self.delim, repr(self.delim)
        )
        return f"{delim}-separated, {self.encoding}"


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; {fix}")
    return path


def read_delimited(
    path: Path,
    dialect: Dialect,
    columns: Mapping[str, str],
    *,
    names: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Read ``columns`` (name -> DuckDB type) of a delimited file.

    With a header, ``columns`` are looked up by header name (extra columns are ignored); without
    one, ``names`` names every column in order. Type errors name the line and the column.
    """
    header_cols = _header(path, dialect) if dialect.header else list(names or [])
    if dialect.header:
        if len(header_cols) <= 1 and len(columns) > 1:
            first = _clip(header_cols[0] if header_cols else "")
            expected = f"{', '.join(columns)} {dialect.describe()}"
            raise UserError(
                f"{path}: the header has one column ({first}); expected {expected} — "
                "wrong delimiter?"
            )
        missing = [c for c in columns if c not in header_cols]
        if missing:
            raise UserError(
                f"{path}: missing column '{missing[0]}' (found: {', '.join(header_cols)}); "
                f"rename it or map it in the config"
            )
    all_types = {c: columns.get(c, "VARCHAR") for c in header_cols}
    options = [
        f"delim={_sql_str(dialect.delim)}",
        f"header={'true' if dialect.header else 'false'}",
        f"encoding={_sql_str(dialect.encoding)}",
        f"quote={_sql_str(dialect.quote)}",
        f"escape={_sql_str(dialect.escape)}",
        "columns={"
        + ", ".join(f"{_sql_str(c)}: {_sql_str(t)}" for c, t in all_types.items())
        + "}",
        "auto_detect=false",
        "strict_mode=true",
        "null_padding=false",
    ]
    select = ", ".join(f'"{c}"' for c in columns)
    query = f"SELECT {select} FROM read_csv({_sql_str(str(path))}, {', '.join(options)})"
    con = duckdb.connect()
    try:
        return con.sql(query).pl()
    except duckdb.Error as exc:
        raise UserError(_explain(path, dialect, exc)) from None
    finally:
        con.close()


def _header(path: Path, dialect: Dialect) -> list[str]:
    """The header fields, split the way DuckDB will split them."""
    encoding = "latin-1" if dialect.encoding == "latin-1" else "utf-8"
    try:
        with open(path, "rb") as f:
            line = f.readline().decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError:
        raise UserError(
            f"{path}: not {encoding} text (line 1); set the file's encoding "
            "(--encoding latin-1, config: encoding)"
        ) from None
    if not line:
        raise UserError(f"{path}: the file is empty")
    fields = line.split(dialect.delim)
    if dialect.quote:
        fields = [f.strip().strip(dialect.quote) for f in fields]
    return fields


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _explain(path: Path, dialect: Dialect, exc: duckdb.Error) -> str:
    msg = str(exc)
    line = re.search(r"on Line: (\d+)", msg)
    where = f"{path} line {line.group(1)}" if line else str(path)
    conv = re.search(r'converting column "([^"]+)"\. Could not convert string "([^"]*)"', msg)
    if conv:
        col, value = conv.groups()
        return (
            f"{where}: column '{col}' holds {_clip(value)!r}, which is not a number; "
            "fix or remove the row"
        )
    if "unicode" in msg.lower() or "utf" in msg.lower():
        return (
            f"{where}: not valid {dialect.encoding} text; set the file's encoding "
            "(--encoding latin-1, config: encoding)"
        )
    if "Expected Number of Columns" in msg or "columns" in msg.lower():
        return (
            f"{where}: wrong number of fields for a file {dialect.describe()}; check the "
            "delimiter and quoting"
        )
    first = msg.splitlines()[0] if msg else type(exc).__name__
    return f"{where}: cannot read it ({_clip(first, 160)})"


def read_parquet(path: Path, columns: Sequence[str]) -> pl.DataFrame:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception:  # polars raises several error types for a non-Parquet file
        raise UserError(f"{path}: not a Parquet file") from None
    missing = [c for c in columns if c not in schema]
    if missing:
        raise UserError(
            f"{path}: missing column '{missing[0]}' (found: {', '.join(schema)}); "
            "rename it or map it in the config"
        )
    return pl.read_parquet(path, columns=list(columns))


def first_duplicate(df: pl.DataFrame, key: str) -> object | None:
    dup = df.filter(pl.col(key).is_duplicated()).get_column(key)
    return dup[0] if dup.len() else None


def check_unique(df: pl.DataFrame, key: str, path: Path, label: str | None = None) -> None:
    """Fail on the first duplicated ``key``; ``label`` is the column's name in the file."""
    dup = first_duplicate(df, key)
    if dup is not None:
        rows = (
            df.with_row_index("row").filter(pl.col(key) == dup).get_column("row").head(2).to_list()
        )
        raise UserError(
            f"{path}: duplicate id {dup!r} in column '{label or key}' (data rows {rows[0] + 1} and "
            f"{rows[1] + 1}); ids must be unique"
        )
