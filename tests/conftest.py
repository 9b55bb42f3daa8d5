"""Shared fixtures: an empty store per test, the real `rerec` CLI driven in process, the toy
pipeline (tests/fixtures/pipeline.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

import schemas
from schemas import ArtifactSchema, TableSchema
from stages.core.store import ArtifactStore
from tests.fixtures.cli import CliResult, invoke
from tests.fixtures.pipeline import copy_of, pipeline  # noqa: F401  (fixtures)

# A one-table artifact schema for tests of the store and the CLI around it.
TOY = ArtifactSchema(
    name="toy",
    version=1,
    kind="test",
    description="toy",
    produced_by="rerec toy",
    tables={"t": TableSchema("t", {"x": pl.Int64})},
)


@pytest.fixture
def toy_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers TOY as the artifacts `toy` and `toy2` for one test."""
    monkeypatch.setitem(schemas.ARTIFACTS, "toy", TOY)
    monkeypatch.setitem(schemas.ARTIFACTS, "toy2", TOY)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "workdir"


@pytest.fixture
def store(workdir: Path) -> ArtifactStore:
    return ArtifactStore(workdir)


@pytest.fixture
def rerec(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run `rerec ARGS...` against the test's workdir; returns exit code, stdout, stderr."""

    def run(*args: str) -> CliResult:
        result = invoke(workdir, monkeypatch, *args)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run
