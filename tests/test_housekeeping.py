"""Workdir care: `rerec status` names stale artifacts and the commands that rebuild them;
`artifacts rm` and `artifacts gc` keep every latest version and what it was built from."""

from __future__ import annotations

import json

import polars as pl
import pytest

from stages.core.errors import UserError
from stages.core.housekeeping import collect, garbage, remove, stale
from stages.core.store import ArtifactStore

pytestmark = pytest.mark.usefixtures("toy_schema")  # artifacts `toy` and `toy2` (conftest)


def write(n: int):
    return lambda w: w.write_table("t", pl.DataFrame({"x": list(range(n))}))


@pytest.fixture
def history(store: ArtifactStore) -> dict[str, str]:
    """toy v1 -> toy2 v1; then toy rebuilt (v2): toy2's latest is stale."""
    a1 = store.build("toy", config={"n": 1}, build=write(1), command="rerec toy --n 1")
    b1 = store.build(
        "toy2", config={"m": 1}, inputs=[a1.artifact], build=write(1), command="rerec toy2"
    )
    a2 = store.build("toy", config={"n": 2}, build=write(2), command="rerec toy --n 2")
    return {"a1": a1.artifact.version, "b1": b1.artifact.version, "a2": a2.artifact.version}


def test_status_names_stale_artifacts_and_their_rebuild_command(store, history, rerec) -> None:
    found = stale(store)
    assert [s.ref for s in found] == [f"toy2@{history['b1']}"]
    assert found[0].inputs == [f"toy@{history['a1']} (latest: toy@{history['a2']})"]
    assert found[0].command == f"rerec -w {store.root} toy2"
    r = rerec("status", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["artifact"] == f"toy2@{history['b1']}"
    assert "rebuild, in this order:" in rerec("status").stdout


def test_gc_keeps_latest_versions_and_their_ancestors(store, history, rerec) -> None:
    # toy v1 is old but toy2's latest was built from it: nothing to collect yet
    assert garbage(store) == []
    new_b = store.build(
        "toy2", config={"m": 1}, inputs=[store.resolve("toy")], build=write(1), command="x"
    ).artifact.version
    assert stale(store) == []
    dry = rerec("artifacts", "gc", "--dry-run")
    assert dry.exit_code == 0 and "would remove 2 version(s)" in dry.stdout
    assert sorted((n, v) for n, v, _ in collect(store, dry_run=True)) == [
        ("toy", history["a1"]), ("toy2", history["b1"]),
    ]  # fmt: skip
    assert store.version_ids("toy") == sorted([history["a1"], history["a2"]])  # dry run
    r = rerec("artifacts", "gc")
    assert r.exit_code == 0 and "removed 2 version(s)" in r.stdout
    assert store.version_ids("toy") == [history["a2"]]
    assert store.version_ids("toy2") == [new_b]
    assert store.resolve("toy2").read("t")["x"].to_list() == [0]


def test_rm_refuses_what_a_kept_artifact_was_built_from(store, history, rerec) -> None:
    with pytest.raises(UserError, match=f"toy@{history['a1']} is an input of toy2@"):
        remove(store, "toy", history["a1"])
    with pytest.raises(UserError, match="is the latest version of toy"):
        remove(store, "toy", history["a2"])
    r = rerec("artifacts", "rm", "toy")
    assert r.exit_code == 2 and "is an input of toy2@" in r.stderr
    r = rerec("artifacts", "rm", "toy2")
    assert r.exit_code == 0 and f"removed toy2@{history['b1']}" in r.stdout
    assert not store.exists("toy2")
    assert remove(store, "toy", history["a1"])[0][0] == history["a1"]  # nothing reads it now
    assert store.version_ids("toy") == [history["a2"]]
    assert rerec("artifacts", "rm", "nothing").exit_code == 2
