"""The shape every artifact schema takes, and the check that a table matches it.

An artifact schema names the artifact, carries an integer version that is bumped whenever the
columns or files change in a way old readers cannot follow, and lists the Parquet tables (with
their column types) and other files the artifact must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

# A column of fixed-width float32 vectors (pl.Array(pl.Float32, d)) whose width d is set by the
# stage's config (e.g. the embedding size), so the schema names the kind, not the width.
FLOAT32_VECTOR = pl.Array(pl.Float32, 1)


def _is_float32_vector(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Array) and dtype.inner == pl.Float32


class SchemaError(ValueError):
    """A table or artifact does not have the shape its schema names."""


@dataclass(frozen=True)
class TableSchema:
    """Columns of one Parquet table, in order, with their Polars types."""

    name: str
    columns: dict[str, pl.DataType]
    description: str = ""
    # Wall-clock timings: kept in the table, left out of the artifact's content hash (they differ
    # on every run, and the content hash must not: it keys every downstream version id).
    timing_columns: tuple[str, ...] = ()

    def validate(self, df: pl.DataFrame, where: str) -> pl.DataFrame:
        """Return ``df`` with exactly this schema's columns, in order; raise on a missing column
        or a type that cannot be cast losslessly."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise SchemaError(
                f"{where}: table '{self.name}' lacks column(s) {', '.join(missing)} "
                f"(expected {', '.join(self.columns)})"
            )
        out = []
        for col, dtype in self.columns.items():
            series = df.get_column(col)
            if dtype == FLOAT32_VECTOR:
                if not _is_float32_vector(series.dtype):
                    raise SchemaError(
                        f"{where}: column '{self.name}.{col}' has type {series.dtype}, "
                        "expected a fixed-width float32 array"
                    )
            elif series.dtype != dtype:
                try:
                    series = series.cast(dtype, strict=True)
                except Exception as exc:  # polars raises several exception types here
                    raise SchemaError(
                        f"{where}: column '{self.name}.{col}' has type {series.dtype}, "
                        f"expected {dtype}"
                    ) from exc
            out.append(series)
        return pl.DataFrame(out)


@dataclass(frozen=True)
class ArtifactSchema:
    """What one artifact holds."""

    name: str
    version: int
    kind: str  # "raw", "model", "graph", ...
    description: str
    produced_by: str  # the command that (re)builds it, quoted in errors
    tables: dict[str, TableSchema] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # required non-table files, relative to the artifact folder
    # Files rebuilt from the tables (a DuckDB copy) whose bytes are not reproducible: listed in
    # the manifest with their sha256 but left out of the content hash, so that the same inputs
    # and config give the same content hash.
    derived_files: tuple[str, ...] = ()
    # Older schema versions whose files this rerec still reads unchanged (a bump that only
    # makes new builds' contents differ, so that they get new version ids).
    reads: tuple[int, ...] = ()
    # Whether `NAME-anything` (e.g. `graph-books`) is an artifact of this schema too, so one
    # store can hold several graphs side by side.
    variants: bool = False

    def can_read(self, version: int) -> bool:
        return version == self.version or version in self.reads

    def table(self, name: str) -> TableSchema:
        try:
            return self.tables[name]
        except KeyError:
            raise SchemaError(
                f"artifact '{self.name}' has no table '{name}' "
                f"(tables: {', '.join(self.tables) or 'none'})"
            ) from None
