"""What the store promises, pinned through the CLI: nothing of the user's deleted, damaged
artifacts refused by name, one name rule, inputs that agree on their ancestors, one writer at a
time and no moment where a version is missing."""

from __future__ import annotations

import json
import os
import threading

import polars as pl
import pytest

from stages.cf.config import PretrainCFConfig
from stages.core.artifact import ArtifactWriter
from stages.core.manifest import MANIFEST
from stages.eval.config import EvalConfig
from stages.eval.stage import evaluate
from stages.queries.config import MakeQueriesConfig
from stages.queries.stage import make_queries
from tests.fixtures.cli import cli
from tests.fixtures.graphs import build_toy_graph, toy_catalogue

pytestmark = pytest.mark.usefixtures("toy_schema")  # the `toy` artifact (conftest)


def write_x(n: int):
    def build(w: ArtifactWriter) -> None:
        w.write_table("t", pl.DataFrame({"x": list(range(n))}))

    return build


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ------------------------------------------------------------------ 1. nothing deleted
def test_report_refuses_to_replace_the_workdir(copy_of, monkeypatch) -> None:
    before = sorted(p.name for p in copy_of.root.iterdir())
    for out in (".", str(copy_of.root)):
        monkeypatch.chdir(copy_of.root)
        r = cli(copy_of, monkeypatch, "report", "eval-popular", "--out", out)
        assert r.exit_code == 2
        assert "not a rerec report" in one_line(r)
    assert sorted(p.name for p in copy_of.root.iterdir()) == before
    assert copy_of.resolve("graph").read("items").height > 0


def test_report_refuses_a_folder_of_other_files_and_a_file(copy_of, monkeypatch, tmp_path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = cli(copy_of, monkeypatch, "report", "eval-popular", "--out", str(mine))
    assert r.exit_code == 2 and "not a rerec report" in one_line(r)
    assert (mine / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "report.txt"
    a_file.write_text("x")
    r = cli(copy_of, monkeypatch, "report", "eval-popular", "--out", str(a_file))
    assert r.exit_code == 2 and "is a file" in one_line(r)
    assert a_file.read_text() == "x"


def test_report_replaces_a_previous_report_and_fills_an_empty_folder(
    copy_of, monkeypatch, tmp_path
) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    r = cli(copy_of, monkeypatch, "report", "eval-popular", "--out", str(out))
    assert r.exit_code == 0, r.output
    (out / "stale.png").write_text("old plot")
    r = cli(copy_of, monkeypatch, "report", "eval-popular", "eval-random", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert not (out / "stale.png").exists()
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [run["eval"].split("@")[0] for run in runs] == ["eval-popular", "eval-random"]


# ------------------------------------------------------------------ 2. integrity
def test_modified_table_is_refused_naming_file_and_rebuild_command(copy_of, monkeypatch) -> None:
    graph = copy_of.resolve("graph")
    items = graph.path / "items.parquet"
    df = pl.read_parquet(items)
    df.with_columns(pl.col("title").str.to_uppercase()).write_parquet(items)
    r = cli(copy_of, monkeypatch, "make-queries", "--force")
    assert r.exit_code == 2
    line = one_line(r)
    assert f"{graph.ref} is damaged: file items.parquet" in line
    assert "rerec build-graph" in line and "--force" in line
    # nothing was republished from the damaged graph
    assert copy_of.resolve("queries").path.joinpath(MANIFEST).is_file()
    assert [a.version for a in copy_of.versions("queries")] == [copy_of.latest_version("queries")]


def test_truncated_file_is_refused_naming_it(copy_of, monkeypatch) -> None:
    cf = copy_of.resolve("cf")
    path = cf.path / "item_embeddings.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    r = cli(copy_of, monkeypatch, "eval", "--baseline", "lightgcn", "--bootstrap", "0")
    assert r.exit_code == 2
    line = one_line(r)
    assert "item_embeddings.parquet" in line and "truncated" in line


def test_unchanged_files_are_not_hashed_again(copy_of, monkeypatch) -> None:
    import stages.core.store as store_module

    art = copy_of.resolve("queries")  # verified once: sizes and mtimes remembered
    calls = []
    real = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda p: calls.append(p) or real(p))
    copy_of.resolve("queries")
    assert calls == []
    os.utime(art.path / "queries.parquet")  # touched, same bytes: hashed once, still intact
    copy_of.resolve("queries")
    assert [p.name for p in calls] == ["queries.parquet"]


def test_a_damaged_existing_version_is_rebuilt_not_skipped(store) -> None:
    first = store.build("toy", config={"n": 2}, build=write_x(2)).artifact
    (first.path / "t.parquet").write_bytes(b"garbage")
    again = store.build("toy", config={"n": 2}, build=write_x(2))
    assert not again.skipped and again.artifact.version == first.version
    assert store.resolve("toy").read("t")["x"].to_list() == [0, 1]


# ------------------------------------------------------------------ 4. names
@pytest.mark.parametrize("output", ["queries-/../../x", "queries-x/y", "queries-x\\\\y"])
def test_output_names_that_are_paths_are_refused(copy_of, monkeypatch, tmp_path, output) -> None:
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    r = cli(copy_of, monkeypatch, "make-queries", "--output", output)
    assert r.exit_code == 2 and "not a valid artifact name" in one_line(r)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_reference_with_a_path_is_refused(copy_of, monkeypatch) -> None:
    r = cli(copy_of, monkeypatch, "artifacts", "show", "../workdir/graph")
    assert r.exit_code == 2 and "not a valid artifact name" in one_line(r)


def test_stale_temp_cleanup_keeps_files_it_did_not_make(store) -> None:
    store.build("toy", config={"n": 1}, build=write_x(1))
    users = [store.root / "toy" / ".tmp-notes", store.root / "toy" / ".tmp-abc-1"]
    for p in users:
        p.write_text("mine")
    dead = store.root / "toy" / ".tmp-999999999-x-abc"  # a killed writer's folder
    dead.mkdir()
    store.build("toy", config={"n": 2}, build=write_x(2))
    assert all(p.read_text() == "mine" for p in users)
    assert not dead.exists()


# ------------------------------------------------------------------ 5. mixed inputs
def test_eval_stops_when_cf_comes_from_another_graph(copy_of, monkeypatch, tmp_path) -> None:
    from stages.cf.stage import pretrain_cf

    old_graph = copy_of.latest_version("graph")
    build_toy_graph(copy_of, tmp_path, toy_catalogue(seed=7))  # a new graph version
    pretrain_cf(copy_of, PretrainCFConfig(epochs=1, embedding_dim=8, batch_size=256))
    # queries come from the old graph, cf (latest) from the new one
    r = cli(copy_of, monkeypatch, "eval", "--baseline", "popular", "--bootstrap", "0")
    assert r.exit_code == 2
    line = one_line(r)
    assert f"graph@{old_graph}" in line and f"graph@{copy_of.latest_version('graph')}" in line
    assert "--allow-mismatch" in line
    r = cli(
        copy_of, monkeypatch, "eval", "--baseline", "popular", "--bootstrap", "0",
        "--allow-mismatch", "--output", "eval-mixed",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "warning: inputs from different versions" in r.stderr
    manifest = copy_of.resolve("eval-mixed").manifest
    assert manifest.warnings and "graph@" in manifest.warnings[0]


def test_report_over_two_query_versions_needs_allow_mismatch(
    copy_of, monkeypatch, tmp_path
) -> None:
    make_queries(
        copy_of,
        MakeQueriesConfig(train_size=6, valid_size=2, test_size=4, candidates=5, seed=99),
    )
    evaluate(copy_of, EvalConfig(baseline="random", bootstrap=0, output="eval-seed99"))
    out = tmp_path / "rep"
    r = cli(copy_of, monkeypatch, "report", "eval-popular", "eval-seed99", "--out", str(out))
    assert r.exit_code == 2 and "queries@" in one_line(r)
    assert not out.exists()
    r = cli(
        copy_of, monkeypatch, "report", "eval-popular", "eval-seed99", "--out", str(out),
        "--allow-mismatch",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "report.json").read_text())["warnings"]
    assert "warning:" in (out / "report.md").read_text()


# ------------------------------------------------------------------ 7. the wrong kind
def test_pretrain_cf_on_a_queries_artifact_is_one_line(copy_of, monkeypatch) -> None:
    r = cli(copy_of, monkeypatch, "pretrain-cf", "--graph", "queries")
    assert r.exit_code == 2
    assert "is a queries artifact, not a graph" in one_line(r)


# ------------------------------------------------------------------ 8. concurrency
def test_second_writer_of_a_name_is_refused_with_the_pid(store) -> None:
    with store.lock("toy"):
        pid = (store.root / ".locks" / "toy.lock").read_text().strip()
        assert pid == str(os.getpid())
        # another process: simulate with a fresh descriptor (flock is per open file)
        import fcntl

        fd = os.open(store.root / ".locks" / "toy.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    # released afterwards
    store.build("toy", config={"n": 1}, build=write_x(1))


def test_concurrent_write_from_another_process_is_refused(store, tmp_path) -> None:
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "hold.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        from stages.core.store import ArtifactStore
        with ArtifactStore({str(store.root)!r}).lock("toy"):
            print("held", flush=True)
            time.sleep(30)
        """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        from stages.core.errors import UserError

        with pytest.raises(UserError, match=f"toy is being written by pid {proc.pid}"):
            store.build("toy", config={"n": 1}, build=write_x(1))
    finally:
        proc.kill()
        proc.wait()
    assert store.latest_version("toy") is None


def test_force_never_leaves_the_version_missing(store) -> None:
    art = store.build("toy", config={"n": 3}, build=write_x(3)).artifact
    seen_missing = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if not (art.path / MANIFEST).is_file():
                seen_missing.append(1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(40):
            store.build("toy", config={"n": 3}, build=write_x(3), force=True)
    finally:
        stop.set()
        t.join()
    assert seen_missing == []
    assert store.resolve("toy").read("t")["x"].to_list() == [0, 1, 2]
    assert not list((store.root / "toy").glob(".tmp-*"))


def test_artifacts_verify_hashes_everything_and_names_the_damage(copy_of, monkeypatch) -> None:
    r = cli(copy_of, monkeypatch, "artifacts", "verify")
    assert r.exit_code == 0, r.output
    assert "damaged" not in r.stdout
    queries = copy_of.resolve("queries")
    path = queries.path / "queries.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, same mtime: only a full hash sees it
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    r = cli(copy_of, monkeypatch, "artifacts", "verify", "queries")
    assert r.exit_code == 2
    assert f"damaged: {queries.ref}: file queries.parquet was modified" in r.stdout
    assert "rerec make-queries" in r.stdout
    r = cli(copy_of, monkeypatch, "artifacts", "verify", "graph")
    assert r.exit_code == 0, r.output
