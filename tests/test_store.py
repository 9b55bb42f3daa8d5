"""The artifact store: atomic writes, content-addressed versions, schema checks, lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

import schemas
from schemas import ArtifactSchema, TableSchema
from stages.core.artifact import ArtifactWriter
from stages.core.errors import UserError
from stages.core.manifest import MANIFEST
from stages.core.store import ArtifactStore

TOY = ArtifactSchema(
    name="toy",
    version=3,
    kind="test",
    description="a table of numbers",
    produced_by="rerec toy",
    tables={"numbers": TableSchema("numbers", {"id": pl.Int64, "value": pl.Float64})},
)


@pytest.fixture(autouse=True)
def toy_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(schemas.ARTIFACTS, "toy", TOY)


def write_numbers(n: int):
    def build(w: ArtifactWriter) -> None:
        w.write_table("numbers", pl.DataFrame({"id": range(n), "value": [i / 2 for i in range(n)]}))
        w.metrics["total"] = n

    return build


def test_build_writes_tables_manifest_and_moves_latest(store: ArtifactStore) -> None:
    result = store.build("toy", config={"n": 3}, build=write_numbers(3), command="rerec toy")
    art = result.artifact
    assert not result.skipped
    assert store.latest_version("toy") == art.version
    assert art.read("numbers")["value"].to_list() == [0.0, 0.5, 1.0]
    m = json.loads((art.path / MANIFEST).read_text())
    assert m["name"] == "toy" and m["schema_version"] == 3 and m["config"] == {"n": 3}
    assert m["row_counts"] == {"numbers": 3} and m["metrics"] == {"total": 3}
    assert m["command"] == "rerec toy" and m["wall_seconds"] >= 0
    assert [f["path"] for f in m["files"]] == ["numbers.parquet"]
    assert len(m["content_hash"]) == 64


def test_identical_rerun_is_recognised_and_force_rebuilds(store: ArtifactStore) -> None:
    calls = []

    def build(w: ArtifactWriter) -> None:
        calls.append(1)
        write_numbers(2)(w)

    first = store.build("toy", config={"n": 2}, build=build)
    again = store.build("toy", config={"n": 2}, build=build)
    assert again.skipped and again.artifact.version == first.artifact.version
    assert len(calls) == 1
    forced = store.build("toy", config={"n": 2}, build=build, force=True)
    assert not forced.skipped and len(calls) == 2
    assert forced.artifact.version == first.artifact.version
    other = store.build("toy", config={"n": 5}, build=write_numbers(5))
    assert other.artifact.version != first.artifact.version
    assert store.latest_version("toy") == other.artifact.version
    # `built` answers what `build` would skip to, without a build function
    assert store.built("toy", config={"n": 7}) is None
    found = store.built("toy", config={"n": 2})
    assert found is not None and found.skipped and found.artifact.version == first.artifact.version
    assert store.latest_version("toy") == first.artifact.version  # latest moves, as in build
    # work done before the writing counts when the stage says when it began
    early = store.build(
        "toy", config={"n": 9}, build=write_numbers(9), started=time.perf_counter() - 5
    )
    assert early.artifact.manifest.wall_seconds >= 5


def test_failed_stage_leaves_no_artifact_and_latest_unmoved(store: ArtifactStore) -> None:
    good = store.build("toy", config={"n": 1}, build=write_numbers(1)).artifact

    def broken(w: ArtifactWriter) -> None:
        write_numbers(4)(w)
        raise ValueError("stage blew up half way")

    with pytest.raises(ValueError, match="half way"):
        store.build("toy", config={"n": 4}, build=broken)
    assert store.latest_version("toy") == good.version
    assert [a.version for a in store.versions("toy")] == [good.version]
    assert sorted(p.name for p in (store.root / "toy").iterdir()) == sorted(
        [good.version, "latest"]
    )


def test_stage_that_skips_a_schema_table_fails(store: ArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="did not write numbers.parquet"):
        store.build("toy", config={}, build=lambda w: None)
    assert store.latest_version("toy") is None
    assert not (store.root / "toy").exists()  # a first write that failed leaves no folder


def test_wrong_columns_are_a_bug_not_an_artifact(store: ArtifactStore) -> None:
    def build(w: ArtifactWriter) -> None:
        w.write_table("numbers", pl.DataFrame({"id": [1]}))

    with pytest.raises(RuntimeError, match="lacks column"):
        store.build("toy", config={}, build=build)
    assert store.versions("toy") == []


def test_schema_mismatch_names_both_versions_and_the_fix(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = store.build("toy", config={}, build=write_numbers(1)).artifact
    monkeypatch.setitem(schemas.ARTIFACTS, "toy", ArtifactSchema(**{**TOY.__dict__, "version": 4}))
    with pytest.raises(UserError) as err:
        store.resolve("toy")
    msg = str(err.value)
    assert f"toy@{art.version} has schema version 3" in msg
    assert "reads version 4" in msg and "rerec toy" in msg


def test_a_bump_that_keeps_the_layout_reads_old_versions_and_gives_new_ids(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store.build("toy", config={}, build=write_numbers(1)).artifact
    bumped = ArtifactSchema(**{**TOY.__dict__, "version": 4, "reads": (3,)})
    monkeypatch.setitem(schemas.ARTIFACTS, "toy", bumped)
    assert store.resolve("toy").version == old.version  # still read (and verified)
    new = store.build("toy", config={}, build=write_numbers(1)).artifact
    assert new.version != old.version and new.manifest.schema_version == 4
    assert new.manifest.content_hash == old.manifest.content_hash


def test_resolve_by_version_and_unique_prefix(store: ArtifactStore) -> None:
    a = store.build("toy", config={"n": 1}, build=write_numbers(1)).artifact
    b = store.build("toy", config={"n": 2}, build=write_numbers(2)).artifact
    assert store.resolve("toy").version == b.version
    assert store.resolve(f"toy@{a.version}").version == a.version
    assert store.resolve(f"toy@{a.version[:8]}").version == a.version
    with pytest.raises(UserError, match="does not exist"):
        store.resolve("toy@ffffffffffff")
    with pytest.raises(UserError, match="no artifact 'nothing'"):
        store.resolve("nothing")


def test_lineage_records_inputs_with_versions_and_hashes(store: ArtifactStore) -> None:
    parent = store.build("toy", config={"n": 1}, build=write_numbers(1)).artifact
    child = store.build("toy", config={"n": 2}, inputs=[parent], build=write_numbers(2)).artifact
    ref = child.manifest.inputs[0]
    assert (ref.name, ref.version, ref.content_hash) == (
        "toy",
        parent.version,
        parent.manifest.content_hash,
    )
    chain = store.lineage(child)
    assert [(d, r.version, found is not None) for d, r, found in chain] == [
        (0, parent.version, True)
    ]
    # A different input content gives a different version for the same config.
    other_parent = store.build("toy", config={"n": 3}, build=write_numbers(3)).artifact
    other = store.build("toy", config={"n": 2}, inputs=[other_parent], build=write_numbers(2))
    assert other.artifact.version != child.version


def test_killed_write_leaves_store_as_it_was(store: ArtifactStore, tmp_path: Path) -> None:
    good = store.build("toy", config={"n": 1}, build=write_numbers(1)).artifact
    script = tmp_path / "slow_stage.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        import polars as pl
        import schemas
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import TOY
        from stages.core.store import ArtifactStore
        schemas.ARTIFACTS["toy"] = TOY
        def build(w):
            w.write_table("numbers", pl.DataFrame({{"id": [1], "value": [1.0]}}))
            (w.path / "started").write_text("x")
            time.sleep(60)
        ArtifactStore({str(store.root)!r}).build("toy", config={{"n": 99}}, build=build)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.time() + 60
        while not list((store.root / "toy").glob(".tmp-*/started")):
            assert proc.poll() is None, "the slow stage died before it started writing"
            assert time.time() < deadline, "the slow stage never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert store.latest_version("toy") == good.version
    assert [a.version for a in store.versions("toy")] == [good.version]
    assert store.resolve("toy").read("numbers").height == 1
    # The next write of the artifact removes what the killed one left.
    store.build("toy", config={"n": 2}, build=write_numbers(2))
    assert not list((store.root / "toy").glob(".tmp-*"))
