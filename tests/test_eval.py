"""`rerec eval`, `rerec report`, `rerec recommend`: metrics against hand and brute-force
computations, every baseline, clear errors, well-formed reports, catalogue-only answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.eval.baselines import baseline_predictions
from stages.eval.config import EvalConfig
from stages.eval.metrics import bootstrap_means, metrics_table, score_predictions
from stages.eval.stage import evaluate
from stages.queries.config import MakeQueriesConfig
from stages.queries.stage import make_queries
from stages.rewards.dual_graph import RewardIndex, RewardWeights
from stages.rl.config import TrainConfig
from stages.rl.stage import train_policy
from tests.fixtures.cli import cli
from tests.fixtures.graphs import build_toy_graph, toy_catalogue
from tests.fixtures.workdirs import build_toy_workdir


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[ArtifactStore, Path]:
    store, model = build_toy_workdir(tmp_path_factory.mktemp("eval"))
    train_policy(
        store,
        TrainConfig(
            model=str(model),
            steps=2,
            limit=4,
            prompts_per_step=2,
            num_generations=3,
            max_completion_length=24,
        ),
    )
    return store, model


def test_metrics_by_hand() -> None:
    q = {
        "query_id": ["a", "b", "c", "d"],
        "domain": ["movies"] * 4,
        "family": ["simple", "simple", "simple", "hard"],
        "candidate_item_ids": [[1, 2], [1, 2], [1, 2], [1, 2]],
        "candidate_titles": [["Up (2009)", "Heat (1995)"]] * 4,
        "positive_item_ids": [[1], [2], [2], [1]],
    }
    df = pl.DataFrame(q)
    completions = ["\\boxed{Up}", "\\boxed{Up}", "no answer", "x\n\n\\boxed{2}"]
    index = RewardIndex.from_tables(
        pl.DataFrame(
            {"item_id": [1, 2], "attr_id": [5, 6]},
            schema={"item_id": pl.Int32, "attr_id": pl.Int32},
        )
    )
    pred = score_predictions(df, completions, [3, 3, 7, 10], index, RewardWeights())
    assert pred["correct"].to_list() == [True, False, False, False]
    assert pred["predicted_item_ids"].to_list() == [[1], [1], [], [2]]
    assert pred["answers"].to_list() == [["Up"], ["Up"], None, ["2"]]
    table = metrics_table(pred, resamples=0, seed=0)

    def get(fam: str, m: str) -> float:
        rows = table.filter((pl.col("family") == fam) & (pl.col("metric") == m))
        return rows["value"][0]

    assert get("simple", "accuracy") == pytest.approx(1 / 3)
    assert get("simple", "valid_format") == pytest.approx(2 / 3)
    assert get("simple", "completion_tokens") == pytest.approx(13 / 3)
    assert get("hard", "accuracy") == 0.0
    assert get("all", "accuracy") == pytest.approx(1 / 4)
    assert get("all", "qas") == pytest.approx(1 / 4)  # only the right answer shares attr 5
    assert table.filter(pl.col("family") == "all")["n"].unique().to_list() == [4]


def test_bootstrap_against_a_loop() -> None:
    values = {"x": np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])}
    got = bootstrap_means(values, 200, np.random.default_rng(3))["x"]
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 7, size=(200, 7))
    means = [values["x"][row].mean() for row in idx]
    assert got[0] == pytest.approx(5 / 7)
    assert got[1] == pytest.approx(np.percentile(means, 2.5))
    assert got[2] == pytest.approx(np.percentile(means, 97.5))
    assert got[1] <= got[0] <= got[2]


def test_each_baseline_by_brute_force(toy) -> None:
    store, _ = toy
    queries = store.resolve("queries")
    graph = store.resolve("graph")
    cf = store.resolve("cf")
    df = queries.read("queries").filter(pl.col("split") == "test")
    inter = graph.read("interactions")
    pop = inter.group_by("item_id").len()
    popmap = dict(pop.iter_rows())
    for kind in ("random", "popular", "lightgcn", "attribute"):
        picks = baseline_predictions(kind, df, graph, cf, seed=1)
        rows = df.to_dicts()
        assert all(p in r["candidate_item_ids"] for p, r in zip(picks, rows, strict=True))
        if kind == "random":
            assert picks == baseline_predictions(kind, df, graph, cf, seed=1)
        if kind == "popular":
            for p, r in zip(picks, rows, strict=True):
                assert popmap.get(p, 0) == max(popmap.get(c, 0) for c in r["candidate_item_ids"])
        if kind == "lightgcn":
            U = dict(cf.read("user_embeddings").iter_rows())
            V = dict(cf.read("item_embeddings").iter_rows())
            for p, r in zip(picks, rows, strict=True):
                if r["user_id"] in U:
                    s = {c: float(np.dot(V[c], U[r["user_id"]])) for c in r["candidate_item_ids"]}
                    assert s[p] == pytest.approx(max(s.values()))
        if kind == "attribute":
            # the positive is the only candidate with every stated (true) condition
            for p, r in zip(picks, rows, strict=True):
                if r["family"] != "interest":
                    assert p in r["positive_item_ids"]


def test_eval_policy_base_and_baseline_through_the_cli(toy, monkeypatch, tmp_path) -> None:
    store, model = toy
    r = cli(store, monkeypatch, "eval", "--max-new-tokens", "16", "--quiet")
    assert r.exit_code == 0, r.output
    art = store.resolve("eval-policy")
    pred, metrics = art.read("predictions"), art.read("metrics")
    n_test = store.resolve("queries").read("queries").filter(pl.col("split") == "test").height
    assert pred.height == n_test
    assert set(metrics["family"]) == {"simple", "medium", "hard", "interest", "all"}
    about = json.loads(art.file("eval.json").read_text())
    assert about["policy"].startswith("policy@") and about["greedy"] is True
    assert "accuracy" in r.stdout
    r = cli(store, monkeypatch, "eval", "--model", str(model), "--max-new-tokens", "8", "-q")
    assert r.exit_code == 0, r.output
    r = cli(store, monkeypatch, "eval", "--baseline", "popular")
    assert r.exit_code == 0 and store.resolve("eval-popular").read("predictions").height == n_test
    # report: files produced and well-formed
    out = tmp_path / "rep"
    r = cli(
        store, monkeypatch, "report", "eval-policy", "eval-base", "eval-popular", "--out", str(out)
    )
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "| run | M-Simple | M-Medium | M-Hard | M-Interest | M-All |" in md
    assert "| popular |" in md and "![training.png](training.png)" in md
    rep = json.loads((out / "report.json").read_text())
    assert [row["run"] for row in rep["tables"][0]["rows"]] == ["policy", "base", "popular"]
    for png in ("accuracy.png", "training.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "M-Simple" in r.stdout
    # --json: one JSON document on stdout, the human lines on stderr
    r = cli(store, monkeypatch, "report", "eval-popular", "--out", str(tmp_path / "r2"), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["tables"][0]["rows"][0]["run"] == "popular"
    assert "written:" in r.stderr
    r = cli(store, monkeypatch, "eval", "--baseline", "popular", "--json")
    got = json.loads(r.stdout)
    assert got["skipped"] is True and got["artifact"].startswith("eval-popular@")
    want = store.resolve("eval-popular").read("metrics").to_dicts()
    assert got["metrics"] == json.loads(json.dumps(want))
    listed = json.loads(cli(store, monkeypatch, "artifacts", "list", "--json").stdout)
    assert {"graph", "queries", "eval-popular"} <= {a["name"] for a in listed}
    assert all(a["content_hash"] and a["problem"] is None for a in listed)


def test_a_rerun_returns_before_loading_a_model(toy, monkeypatch) -> None:
    """An eval that exists is found from its config and inputs alone: the model is not loaded
    (nor an adapter merged) to learn that it is there."""
    store, model = toy
    runs = (
        ["--max-new-tokens", "16", "-q"],
        ["--model", str(model), "--max-new-tokens", "8", "-q"],
    )
    for args in runs:
        assert cli(store, monkeypatch, "eval", *args).exit_code == 0
    before = {n: store.resolve(n).version for n in ("eval-policy", "eval-base")}

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded for an eval that exists")

    monkeypatch.setattr("stages.llm.generation.load_generator", no_loading)
    for args in runs:
        r = cli(store, monkeypatch, "eval", *args)
        assert r.exit_code == 0, r.output
        assert "already" in r.stdout
    assert {n: store.resolve(n).version for n in before} == before
    # a changed option is a new version, and does load the model
    r = cli(store, monkeypatch, "eval", "--max-new-tokens", "12", "-q")
    assert r.exit_code != 0 and "a model was loaded" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "nope"], "no artifact 'nope'"),
        (["--queries", "queries@ffff"], "does not exist"),
        (["--model", "/no/such/model"], "model /no/such/model: no such folder"),
        (
            ["--policy", "policy", "--baseline", "random"],
            "give one of --policy, --model, --baseline",
        ),
        (["--use-vllm"], "--use-vllm needs vLLM"),
    ],
)
def test_eval_bad_input(toy, monkeypatch, args, message) -> None:
    store, _ = toy
    r = cli(store, monkeypatch, "eval", *args, "-q")
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_graph_mismatch_and_empty_split(toy, monkeypatch, tmp_path) -> None:
    store, _ = toy
    work = tmp_path / "workdir"
    shutil.copytree(store.root, work, symlinks=True)
    other = ArtifactStore(work)
    build_toy_graph(other, tmp_path, toy_catalogue(seed=5))  # a new graph version
    make_queries(
        other,
        MakeQueriesConfig(
            output="queries-other", families=["simple"], train_size=2, valid_size=1, test_size=2
        ),
    )
    r = cli(other, monkeypatch, "eval", "--queries", "queries-other", "-q", "--max-new-tokens", "4")
    assert r.exit_code == 2 and "the policy was trained on queries from graph@" in r.stderr
    r = cli(
        other,
        monkeypatch,
        "eval",
        "--queries",
        "queries-other",
        "--allow-mismatch",
        "-q",
        "--max-new-tokens",
        "4",
    )
    assert r.exit_code == 0, r.output
    assert "warning: the policy was trained on queries from" in r.stderr
    with pytest.raises(UserError, match="has no test queries of families hard"):
        evaluate(other, EvalConfig(baseline="random", queries="queries-other", families=["hard"]))


def test_recommend_answers_from_the_catalogue(toy, monkeypatch) -> None:
    store, model = toy
    items = set(store.resolve("graph").read("items")["item_id"].to_list())
    r = cli(
        store,
        monkeypatch,
        "recommend",
        "a film directed by Director 3",
        "--model",
        str(model),
        "--max-new-tokens",
        "24",
        "--json",
        "--k",
        "3",
    )
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)
    recs = answer["recommendations"]
    assert 1 <= len(recs) <= 3 and all(x["item_id"] in items for x in recs)
    assert {"relation": "director", "value": "Director 3", "via": None} in answer[
        "request_attributes"
    ]
    # Director 3 made films 15-19: they are the retrieval's top candidates
    assert {c.split(" (")[0] for c in answer["candidates"][:5]} == {
        f"Film {i}" for i in range(15, 20)
    }
    # a chat: the second turn refines the first, every answer from the catalogue
    r = cli(
        store,
        monkeypatch,
        "recommend",
        "--chat",
        "--json",
        "--max-new-tokens",
        "16",
        input="something by Director 2\na Comedy please\n",
    )
    assert r.exit_code == 0, r.output
    turns = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(turns) == 2
    assert all(x["item_id"] in items for t in turns for x in t["recommendations"])
    assert {m["value"] for m in turns[1]["request_attributes"]} >= {"Director 2", "Comedy"}
    r = cli(store, monkeypatch, "recommend")
    assert r.exit_code == 2 and "give a request" in r.stderr


def test_an_interrupted_eval_resumes_to_what_an_unbroken_one_writes(toy, monkeypatch) -> None:
    """Batches are saved as they finish; `--resume` takes them instead of generating them again
    and writes the answers an unbroken run writes, sampled ones included (each batch draws from
    its own seed). The run folder goes once the artifact is written."""
    import stages.llm.generation as generation

    store, _ = toy
    settings = {"policy": "policy", "max_new_tokens": 12, "batch_size": 3, "temperature": 1.0}
    whole = evaluate(store, EvalConfig(**settings, output="eval-unbroken")).artifact
    n = whole.manifest.metrics["queries"]
    assert whole.manifest.config["seeds"] == "per batch"  # a version apart from older ones
    batches = -(-n // 3)
    assert batches >= 3

    cfg = EvalConfig(**settings, output="eval-resumed")

    def stop_after_two(done: int, total: int) -> None:
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(UserError, match=f"interrupted after 6 of {n} answers.*--resume"):
        evaluate(store, cfg, on_batch=stop_after_two)
    assert not store.exists("eval-resumed")
    (folder,) = (store.root / ".runs").glob("eval-resumed-*")
    assert sorted(p.name for p in folder.glob("batch-*")) == [
        "batch-00000.parquet",
        "batch-00001.parquet",
    ]

    generated: list[int] = []
    load = generation.load_generator

    def counting_loader(*args, **kwargs):
        gen = load(*args, **kwargs)
        generate = gen.model.generate

        def counted(**batch):
            generated.append(batch["input_ids"].shape[0])
            return generate(**batch)

        gen.model.generate = counted
        return gen

    monkeypatch.setattr(generation, "load_generator", counting_loader)
    resumed = evaluate(store, cfg, resume=True).artifact
    assert len(generated) == batches - 2 and sum(generated) == n - 6
    want, got = whole.read("predictions"), resumed.read("predictions")
    assert got.equals(want)
    assert want["completion"].n_unique() > 1  # sampled answers, not one repeated string
    assert resumed.read("metrics").equals(whole.read("metrics"))
    assert not folder.exists()


def test_resume_refuses_what_it_cannot_continue(toy, monkeypatch) -> None:
    store, _ = toy
    r = cli(store, monkeypatch, "eval", "--output", "eval-none", "--resume", "-q")
    assert r.exit_code == 2 and "nothing to resume" in r.stderr, r.output
    r = cli(store, monkeypatch, "eval", "--baseline", "random", "--resume")
    assert r.exit_code == 2 and "nothing to resume" in r.stderr, r.output
    # answers saved from other prompts (another rerec's renderer) are not mixed in
    cfg = EvalConfig(policy="policy", max_new_tokens=8, batch_size=3, output="eval-stale")

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(UserError, match="interrupted after 3 of"):
        evaluate(store, cfg, on_batch=stop)
    (folder,) = (store.root / ".runs").glob("eval-stale-*")
    (folder / "fingerprint.json").write_text('{"sha256": "0"}')
    with pytest.raises(UserError, match="other prompts or settings"):
        evaluate(store, cfg, resume=True)
    assert (folder / "batch-00000.parquet").is_file()  # refused, nothing deleted
    # without --resume the run starts again and cleans up after itself
    done = evaluate(store, cfg).artifact
    assert done.manifest.metrics["queries"] > 3 and "seeds" not in done.manifest.config
    assert not folder.exists()
