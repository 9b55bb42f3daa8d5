"""Determinism: every stage is a function of (config, inputs, seed). The same pipeline is run
through the real CLI into two workdirs, one with a single thread (`POLARS_MAX_THREADS=1`,
`OMP_NUM_THREADS=1`) and one with four, and every table is compared with `DataFrame.equals`.

Polars' thread pool is fixed when polars is imported, so each run is its own process (one
process per run, its commands driven through the CLI app in turn, to pay the imports once).
The only columns left out are the timings the schemas declare (`timing_columns`, also left out
of content hashes): `curve.train_seconds`, `curve.eval_seconds` (cf) and `log.seconds`
(policy). LightGCN embeddings are compared bit for bit: on one CPU type they are identical
whatever the thread count (the cf manifest's `float_reproducibility` says so).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from stages.core.store import ArtifactStore

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("popular", "random", "lightgcn", "attribute")
N_ITEMS, N_USERS, PER_USER = 300, 150, 30  # 4,500 interactions: enough for polars to split work

# The commands of one run (after `--workdir W`); the graph's YAML is added per workdir. A batch
# of 2048 x 32 floats is large enough for torch to scatter gradients on several threads.
PIPELINE = [
    ["pretrain-cf", "--epochs", "3", "--embedding-dim", "32", "--batch-size", "2048", "-q"],
    ["make-queries", "--train-size", "40", "--valid-size", "8", "--test-size", "12"],
    *[["eval", "--baseline", b, "--bootstrap", "200", "-q"] for b in BASELINES],
]

# Runs the commands given as JSON through the CLI app, in this process; stops at a failure.
DRIVER = """
import json, sys
from typer.testing import CliRunner
from rerec_cli.main import app
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        sys.exit(f"rerec {' '.join(args)}: exit {result.exit_code}\\n{result.output}")
"""


def write_source(folder: Path) -> Path:
    """A generic-source movie catalogue (directors, writers, two cast members, a genre) and
    4,500 ratings with many equal timestamps; returns the build-graph YAML."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    items, attrs, ratings = [], [], []
    genres = ["Comedy", "Drama", "Horror", "Western", "Crime"]
    for i in range(N_ITEMS):
        items.append((f"m{i}", f"Film {i}", 1970 + i % 40))
        attrs += [
            (f"m{i}", "director", f"Director {i // 5}"),
            (f"m{i}", "writer", f"Writer {rng.randrange(60)}"),
            (f"m{i}", "genre", genres[i % 5]),
            (f"m{i}", "cast", f"Actor {2 * rng.randrange(40)}"),
            (f"m{i}", "cast", f"Actor {2 * rng.randrange(40) + 1}"),
        ]
    for u in range(N_USERS):
        for t, i in enumerate(rng.sample(range(N_ITEMS), PER_USER)):
            ratings.append((f"u{u}", f"m{i}", rng.choice([2, 4, 5, 5]), 1000 * u + t // 2))
    pl.DataFrame(items, schema=["item_id", "title", "year"], orient="row").write_csv(
        folder / "items.csv"
    )
    pl.DataFrame(attrs, schema=["item_id", "relation", "value"], orient="row").write_csv(
        folder / "attrs.csv"
    )
    pl.DataFrame(
        ratings, schema=["user_id", "item_id", "rating", "timestamp"], orient="row"
    ).write_csv(folder / "inter.csv")
    config = {
        "build-graph": {
            "source": "generic",
            "domain": "movies",
            "output": "graph",
            "items_path": str(folder / "items.csv"),
            "interactions_path": str(folder / "inter.csv"),
            "item_attributes_path": str(folder / "attrs.csv"),
            "columns": {"year": "year", "rating": "rating", "timestamp": "timestamp"},
        }
    }
    path = folder / "rerec.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def start(workdir: Path, commands: list[list[str]], **env: str) -> subprocess.Popen:
    """Run ``commands`` (each after ``--workdir workdir``) in one fresh process."""
    env = {**os.environ, **env}
    env.pop("REREC_WORKDIR", None)
    commands = [["--workdir", str(workdir), *c] for c in commands]
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[ArtifactStore, ArtifactStore]:
    root = tmp_path_factory.mktemp("determinism")
    config = write_source(root / "source")
    commands = [["build-graph", "--config", str(config)], *PIPELINE]
    threads = {t: {"POLARS_MAX_THREADS": str(t), "OMP_NUM_THREADS": str(t)} for t in (1, 4)}
    finish([start(root / f"w{t}", commands, **threads[t]) for t in (1, 4)])
    return ArtifactStore(root / "w1"), ArtifactStore(root / "w4")


def assert_same_artifact(a: ArtifactStore, b: ArtifactStore, name: str) -> None:
    """Same version id and content hash, same tables (timing columns aside)."""
    x, y = a.resolve(name), b.resolve(name)
    assert x.version == y.version, name
    assert x.manifest.content_hash == y.manifest.content_hash, name
    assert x.manifest.row_counts == y.manifest.row_counts, name
    tables = sorted(p.stem for p in x.path.glob("*.parquet"))
    assert tables and tables == sorted(p.stem for p in y.path.glob("*.parquet")), name
    for table in tables:
        dx, dy = x.read(table), y.read(table)
        timing = x.schema.table(table).timing_columns
        dx, dy = dx.drop(timing), dy.drop(timing)
        assert dx.equals(dy), f"{name}.{table} differs between the workdirs"


def test_build_graph_is_deterministic(runs) -> None:
    assert_same_artifact(*runs, "graph")


def test_pretrain_cf_is_deterministic(runs) -> None:
    a, b = runs
    assert_same_artifact(a, b, "cf")  # the split, the curve and the embeddings, bit for bit
    ma, mb = a.resolve("cf").manifest.metrics, b.resolve("cf").manifest.metrics
    assert "bit-identical" in ma["float_reproducibility"]
    for key in ("valid", "test", "epochs", "best_epoch", "train_interactions"):
        assert ma[key] == mb[key], key


def test_make_queries_is_deterministic_across_thread_counts(runs) -> None:
    a, b = runs
    assert_same_artifact(a, b, "queries")
    q = a.resolve("queries").read("queries")
    assert q.height == 4 * (40 + 8 + 12)
    assert a.resolve("queries").manifest.metrics == b.resolve("queries").manifest.metrics


def test_every_baseline_is_deterministic(runs) -> None:
    a, b = runs
    for baseline in BASELINES:
        assert_same_artifact(a, b, f"eval-{baseline}")
        pa = a.resolve(f"eval-{baseline}").read("predictions")
        assert pa.height == 4 * 12 and pa["predicted_item_ids"].list.len().min() == 1


@pytest.fixture(scope="module")
def trained(runs, tmp_path_factory) -> tuple[ArtifactStore, ArtifactStore]:
    """A tiny model stored as the `smollm2-135m` artifact of both workdirs, then a cold start
    and a LoRA training from it in each, one process per workdir with different hash seeds
    (PEFT writes its target modules in set order, which follows the seed) and the same thread
    count."""
    from tests.fixtures.tiny_llm import write_tiny_llm

    a, b = runs
    queries = a.resolve("queries").read("queries")
    model = write_tiny_llm(tmp_path_factory.mktemp("tiny") / "llm", queries["text"].to_list())
    for store in (a, b):
        store.build(
            "smollm2-135m",
            config={"tiny": True},
            build=lambda w: shutil.copytree(model, w.file("model"), dirs_exist_ok=True),
        )
    sft = ["sft", "--model", "smollm2-135m", "--steps", "3", "--batch-size", "2"]
    sft += ["--micro-batch", "1", "--precision", "fp32", "--max-length", "2048", "-q"]
    train = ["train", "--model", "smollm2-135m", "--steps", "4", "--limit", "4"]
    train += ["--prompts-per-step", "2", "-G", "3", "--max-completion-length", "12", "-q"]
    finish(
        [
            start(store.root, [sft, train], PYTHONHASHSEED=seed, OMP_NUM_THREADS="2")
            for store, seed in ((a, "0"), (b, "1"))
        ]
    )
    return a, b


def test_train_is_deterministic(trained) -> None:
    """The same step log (timings aside), rollouts, curriculum and content hash: the LoRA
    adapter's folder included, though the workdirs differ."""
    a, b = trained
    assert_same_artifact(a, b, "policy")
    policy = a.resolve("policy")
    assert policy.read("log")["epoch"].to_list() == [0, 0, 1, 1]
    assert policy.read("curriculum").height == 4  # epoch 1 ordered from epoch 0's rollouts
    config = json.loads(policy.file("model/adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])


def test_sft_is_deterministic(trained) -> None:
    """The same targets, losses (timings aside), weights, version id and content hash (the
    adapter folder names the base relative to the workdir)."""
    from safetensors.torch import load_file

    a, b = trained
    assert_same_artifact(a, b, "sft")
    wa, wb = (load_file(s.resolve("sft").file("model/model.safetensors")) for s in (a, b))
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)
    sft = a.resolve("sft")
    config = json.loads(sft.file("adapter/adapter_config.json").read_text())
    base = a.resolve("smollm2-135m")
    assert config["base_model_name_or_path"] == f"../../../smollm2-135m/{base.version}/model"
    assert str(a.root) not in sft.file("adapter/README.md").read_text()


def test_make_queries_asks_for_at_least_one_query(rerec) -> None:
    result = rerec("make-queries", "--train-size", "0", "--valid-size", "0", "--test-size", "0")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "at least one query" in lines[0], result.stderr
