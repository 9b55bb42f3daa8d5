"""Shared fixtures: an empty store per test, and the real `rerec` CLI driven in process."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import schemas
from rerec_cli.app import state
from rerec_cli.main import app
from schemas import ArtifactSchema, TableSchema
from stages.core.store import ArtifactStore

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


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def rerec(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run `rerec ARGS...` against the test's workdir; returns exit code, stdout, stderr."""
    monkeypatch.setenv("REREC_WORKDIR", str(workdir))
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> CliResult:
        state.debug = False
        result = CliRunner().invoke(app, list(args))
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


def invoke(workdir: Path, monkeypatch: pytest.MonkeyPatch, *args: str, input: str | None = None):
    """Run `rerec ARGS...` against ``workdir`` (for module-scoped stores); the click result."""
    monkeypatch.setenv("REREC_WORKDIR", str(workdir))
    monkeypatch.setenv("COLUMNS", "300")
    state.debug = False
    return CliRunner().invoke(app, list(args), input=input)


def build_wheel(path: Path, files: Mapping[str, bytes]) -> str:
    """Write a zip archive (a wheel is one) with ``files``; return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()
