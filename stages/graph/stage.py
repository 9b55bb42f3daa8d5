"""`rerec build-graph`: the item–attribute graph and the user–item interactions.

Recipe: read the source through its adapter, enrich movies with Wikidata film facts, check the
interactions against the catalogue, optionally k-core filter, assign dense ids, derive the
attribute nodes (source attributes + film facts + decade), and write the tables as Parquet and
into one DuckDB file. Every step is a Polars expression or a DuckDB statement over whole tables.
"""

from __future__ import annotations

import time
from pathlib import Path

from schemas.graph import GRAPH
from stages.core.artifact import Artifact, ArtifactWriter, BuildResult
from stages.core.errors import UserError
from stages.core.manifest import sha256_file
from stages.core.store import ArtifactStore
from stages.graph.assemble import assemble, write_duckdb
from stages.graph.config import BuildGraphConfig
from stages.graph.film_facts import read_wikidata_films
from stages.graph.sources.book_crossing import read_book_crossing
from stages.graph.sources.common import SourceTables
from stages.graph.sources.generic import read_generic
from stages.graph.sources.movielens import read_movielens
from stages.graph.sources.recbole import read_recbole_atomic, read_recbole_ml100k


def input_artifacts(cfg: BuildGraphConfig, store: ArtifactStore) -> dict[str, Artifact]:
    """The fetched artifacts this build reads (none for files given by path)."""
    inputs: dict[str, Artifact] = {}
    if cfg.input_dir is None and cfg.source in ("ml-100k", "book-crossing"):
        inputs[cfg.source] = store.resolve(cfg.source)
    if cfg.enrich and cfg.source in ("ml-100k", "movielens"):
        inputs["wikidata-films"] = store.resolve("wikidata-films")
    return inputs


def read_source(cfg: BuildGraphConfig, inputs: dict[str, Artifact]) -> SourceTables:
    if cfg.source == "ml-100k":
        folder = cfg.input_dir or inputs["ml-100k"].path / "ml-100k"
        return read_recbole_ml100k(folder)
    if cfg.source == "movielens":
        assert cfg.input_dir is not None
        return read_movielens(cfg.input_dir)
    if cfg.source == "recbole":
        assert cfg.input_dir is not None
        return read_recbole_atomic(cfg.input_dir, cfg.domain)
    if cfg.source == "book-crossing":
        return read_book_crossing(
            cfg.input_dir or inputs["book-crossing"].path, cfg.book_interactions
        )
    assert cfg.items_path is not None and cfg.interactions_path is not None
    return read_generic(
        domain=cfg.domain,
        items_path=cfg.items_path,
        interactions_path=cfg.interactions_path,
        item_attributes_path=cfg.item_attributes_path,
        users_path=cfg.users_path,
        columns=cfg.columns,
        delimiter=cfg.delimiter,
        encoding=cfg.encoding,
    )


def external_files(cfg: BuildGraphConfig) -> dict[str, str]:
    """sha256 of every input file outside the store, so a changed file makes a new version."""
    paths: list[Path] = []
    if cfg.input_dir is not None:
        if not cfg.input_dir.is_dir():
            what = "is a file, not a folder" if cfg.input_dir.exists() else "does not exist"
            raise UserError(f"input folder {cfg.input_dir} {what}")
        paths += sorted(p for p in cfg.input_dir.iterdir() if p.is_file())
    for p in (cfg.items_path, cfg.interactions_path, cfg.item_attributes_path, cfg.users_path):
        if p is not None:
            if p.is_dir():  # a Hugging Face dataset folder: every file in it
                paths += sorted(f for f in p.rglob("*") if f.is_file())
                continue
            if not p.is_file():
                raise UserError(f"{p} does not exist")
            paths.append(p)
    return {str(p.resolve()): sha256_file(p) for p in paths}


def build_graph(
    store: ArtifactStore,
    cfg: BuildGraphConfig,
    *,
    force: bool = False,
    command: str | None = None,
) -> BuildResult:
    files = external_files(cfg)
    inputs = input_artifacts(cfg, store)

    def build(writer: ArtifactWriter) -> None:
        t0 = time.perf_counter()
        src = read_source(cfg, inputs)
        films = None
        if "wikidata-films" in inputs and src.domain == "movies":
            films = read_wikidata_films(inputs["wikidata-films"].path / "movies.db")
        t1 = time.perf_counter()
        graph = assemble(src, cfg, films)
        t2 = time.perf_counter()
        for name in GRAPH.tables:
            writer.write_table(name, getattr(graph, name))
        write_duckdb(writer.file("graph.duckdb"), graph)
        t3 = time.perf_counter()
        writer.metrics.update(graph.stats)
        writer.metrics["timings"] = {
            "read_seconds": round(t1 - t0, 3),
            "assemble_seconds": round(t2 - t1, 3),
            "write_seconds": round(t3 - t2, 3),
        }

    config = {**cfg.model_dump(mode="json"), "external_files": files}
    return store.build(
        cfg.artifact_name,
        config=config,
        inputs=list(inputs.values()),
        build=build,
        force=force,
        command=command,
    )
