"""Reading users' table files (CSV/TSV/`::`-separated/Parquet) with DuckDB, and turning every
way they can be wrong into one line that names the file, the row or column, and the fix.

DuckDB reads latin-1, multi-byte delimiters and backslash escapes (Book-Crossing, MovieLens-1M)
that Polars' CSV reader does not, and it is fast on the 25M-row files; the results are handed
on as Polars frames.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

from stages.core.errors import UserError


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
    optional: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read ``columns`` (name -> DuckDB type) of a delimited file.

    With a header, ``columns`` are looked up by header name (extra columns are ignored), and
    ``optional`` columns are read too where the header has them; without one, ``names`` names
    every column in order. Type errors name the line and the column.
    """
    header_cols = header_fields(path, dialect) if dialect.header else list(names or [])
    if optional:
        extra = {c: t for c, t in optional.items() if c in header_cols and c not in columns}
        columns = {**columns, **extra}
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


_BOM = b"\xef\xbb\xbf"


def header_fields(path: Path, dialect: Dialect) -> list[str]:
    """The header fields, split the way DuckDB will split them. A UTF-8 byte-order mark (Excel
    writes one) is not part of the first name; DuckDB itself skips it when reading the rows."""
    encoding = "latin-1" if dialect.encoding == "latin-1" else "utf-8"
    try:
        with open(path, "rb") as f:
            line = f.readline().removeprefix(_BOM).decode(encoding).rstrip("\r\n")
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


def read_parquet(path: Path, columns: Sequence[str], optional: Sequence[str] = ()) -> pl.DataFrame:
    """Read ``columns`` of a Parquet file, and ``optional`` ones where the file has them. A
    byte-order mark left on a column name (a BOM-headed CSV read into pandas) is ignored."""
    try:
        schema = pl.read_parquet_schema(path)
    except Exception:  # polars raises several error types for a non-Parquet file
        raise UserError(f"{path}: not a Parquet file") from None
    stored = stored_columns(path, list(schema), columns)
    wanted = list(dict.fromkeys([*columns, *(c for c in optional if c in stored)]))
    df = pl.read_parquet(path, columns=[stored[c] for c in wanted])
    return df.rename({stored[c]: c for c in wanted if stored[c] != c})


def stored_columns(path: Path, names: Sequence[str], columns: Sequence[str]) -> dict[str, str]:
    """Our name -> the stored name (a BOM dropped); a missing column is one line."""
    stored = {name.removeprefix("\ufeff"): name for name in names}
    missing = [c for c in columns if c not in stored]
    if missing:
        raise UserError(
            f"{path}: missing column '{missing[0]}' (found: {', '.join(stored)}); "
            "rename it or map it in the config"
        )
    return stored


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


# ------------------------------------------------------------------ values, row by row
ROW = "__row"  # 1-based data row number (header not counted), added before any row is dropped
ColumnKind = Literal["id", "text", "number", "timestamp", "integer"]


def with_rows(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with its data row numbers in column ``ROW``, for messages that name the row."""
    return df.with_row_index(ROW, offset=1)


def fail_on_first(df: pl.DataFrame, bad: pl.Expr, message: Callable[[dict], str]) -> None:
    """Raise ``message(row)`` for the first row where ``bad`` holds (``row[ROW]``: its number)."""
    hit = df.filter(bad).head(1)
    if hit.height:
        raise UserError(message(hit.row(0, named=True)))


def _short(value: object) -> str:
    return repr(_clip(value)) if isinstance(value, str) else repr(value)


def typed_column(df: pl.DataFrame, name: str, kind: ColumnKind, path: Path) -> pl.Series:
    """Column ``name`` of ``df`` (which has ``ROW``) as the type ``kind`` needs, or a one-line
    error. CSV columns arrive typed by DuckDB; Parquet ones come as the file stored them:

    id         String; from text or whole numbers only (a list, a float, a struct is an error)
    text       String; from any scalar type
    number     Float64; from numbers, or from text that parses as a number (else: error, row)
    timestamp  Int64 seconds; from whole numbers, finite floats, dates, datetimes or numeric text
    integer    Int32; lax: text that is not a whole number becomes null (years, ages)
    """
    col = df.get_column(name)
    dtype = col.dtype
    textual = dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))
    nested = dtype.is_nested() or dtype in (pl.Binary, pl.Object)
    dated = isinstance(dtype, pl.Datetime) or dtype == pl.Date
    whole = dtype.is_integer() or dtype == pl.Null

    def wrong(expected: str) -> UserError:
        return UserError(
            f"{path}: column '{name}' holds {dtype} values; expected {expected} — write it "
            "so, or map another column with --column"
        )

    def fail_where(bad: pl.Expr, frame: pl.DataFrame, what: str) -> None:
        fail_on_first(
            frame,
            pl.col(name).is_not_null() & bad,
            lambda r: (
                f"{path} row {r[ROW]}: column '{name}' holds {_short(r[name])}, which is not "
                f"{what}; fix or remove the row"
            ),
        )

    def parsed(target: type[pl.DataType], what: str) -> pl.Series:
        out = col.cast(pl.String).str.strip_chars().cast(target, strict=False)
        fail_where(pl.col("__parsed").is_null(), df.with_columns(out.alias("__parsed")), what)
        return out

    if kind == "id":
        if not (textual or whole):
            raise wrong("one id per row, as text or a whole number")
        return col.cast(pl.String)
    if nested:
        raise wrong("one value per row")
    if kind == "text":
        return col.cast(pl.String)
    if kind == "integer":  # lax, as in CSV: "n/a" -> null; a date gives its year
        if dated:
            return col.dt.year().cast(pl.Int32)
        return (col.cast(pl.String) if textual else col).cast(pl.Int32, strict=False)
    if kind == "number":
        if textual:
            return parsed(pl.Float64, "a number")
        if not (dtype.is_numeric() or whole):
            raise wrong("numbers")
        return col.cast(pl.Float64)
    # timestamp
    if textual:
        return parsed(pl.Int64, "a whole number of seconds")
    if dated:
        return col.cast(pl.Datetime("ms")).dt.epoch("s") if dtype == pl.Date else col.dt.epoch("s")
    if dtype.is_float():
        fail_where(~pl.col(name).is_finite(), df, "a timestamp")
        return col.cast(pl.Int64)
    if not (whole or dtype.is_decimal()):
        raise wrong("timestamps (seconds since 1970, or dates)")
    return col.cast(pl.Int64)


def check_filled(df: pl.DataFrame, col: str, path: Path, label: str, what: str) -> None:
    """No null, empty or blank ``col`` (a String column; ``label``: its name in the file)."""
    fail_on_first(
        df,
        pl.col(col).is_null() | (pl.col(col).str.strip_chars() == ""),
        lambda r: (
            f"{path} row {r[ROW]}: empty {what} in column '{label}'; fill it in or remove the row"
        ),
    )


def check_no_nul(df: pl.DataFrame, col: str, path: Path, label: str) -> None:
    """No NUL character in ``col``: C-string tools (DuckDB's CLI, tokenizers) cut text there."""
    fail_on_first(
        df,
        pl.col(col).str.contains("\x00", literal=True),
        lambda r: (
            f"{path} row {r[ROW]}: column '{label}' holds a NUL byte ({_short(r[col])}); remove it"
        ),
    )
