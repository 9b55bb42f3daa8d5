"""A finished artifact (`Artifact`) and the handle a stage writes one with (`ArtifactWriter`)."""

from __future__ import annotations

import hashlib
import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from schemas import ArtifactSchema, SchemaError, schema_for
from stages.core.errors import UserError
from stages.core.manifest import InputRef, Manifest


@dataclass(frozen=True)
class Artifact:
    """A finished artifact on disk."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def schema(self) -> ArtifactSchema:
        return schema_for(self.name)

    def as_input(self) -> InputRef:
        return InputRef(
            name=self.name, version=self.version, content_hash=self.manifest.content_hash
        )

    @property
    def rebuild_command(self) -> str:
        """The command that wrote this artifact, with ``--force``: what rebuilds it as it was."""
        fallback = self.schema.produced_by
        if self.name in fallback.split():  # already names this artifact (`rerec fetch NAME`)
            return fallback
        try:
            command = shlex.split(self.manifest.command)
        except ValueError:
            return fallback
        if command[:2] != fallback.split()[:2]:  # not written by that rerec command
            return fallback
        return shlex.join(command if "--force" in command else [*command, "--force"])

    def table_path(self, table: str) -> Path:
        try:
            self.schema.table(table)
        except SchemaError as exc:
            raise UserError(f"{self.path}: {exc}") from None
        path = self.path / f"{table}.parquet"
        if not path.is_file():
            raise UserError(
                f"{self.ref}: table file {path} is missing; rebuild with "
                f"`{self.schema.produced_by}`"
            )
        return path

    def scan(self, table: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.table_path(table))

    def read(self, table: str) -> pl.DataFrame:
        return pl.read_parquet(self.table_path(table))

    def file(self, relpath: str) -> Path:
        path = self.path / relpath
        if not path.exists():
            raise UserError(
                f"{self.ref}: file {path} is missing; rebuild with `{self.schema.produced_by}`"
            )
        return path


@dataclass
class ArtifactWriter:
    """Handed to a stage's build function: where to write, and what to record."""

    path: Path
    schema: ArtifactSchema
    row_counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # sha256 of a table written without its timing columns: what the content hash uses for it.
    content_sha256: dict[str, str] = field(default_factory=dict)

    def write_table(self, table: str, df: pl.DataFrame) -> Path:
        """Validate ``df`` against the schema's table and write it as Parquet."""
        try:
            df = self.schema.table(table).validate(df, where=f"artifact '{self.schema.name}'")
        except SchemaError as exc:
            # A stage producing the wrong columns is a bug in rerec, not a user error.
            raise RuntimeError(str(exc)) from None
        out = self.path / f"{table}.parquet"
        df.write_parquet(out, compression="zstd", statistics=True)
        self.row_counts[table] = df.height
        timing = self.schema.table(table).timing_columns
        if timing:
            buf = io.BytesIO()
            df.drop(timing).write_parquet(buf, compression="zstd", statistics=True)
            self.content_sha256[out.name] = hashlib.sha256(buf.getvalue()).hexdigest()
        return out

    def file(self, relpath: str) -> Path:
        """A path inside the artifact for a non-table file; parent folders are created."""
        out = (self.path / relpath).resolve()
        if not out.is_relative_to(self.path.resolve()):
            raise RuntimeError(f"artifact file {relpath!r} escapes the artifact folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        return out


@dataclass(frozen=True)
class BuildResult:
    artifact: Artifact
    skipped: bool  # an identical artifact already existed
