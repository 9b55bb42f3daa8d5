"""The experiment's results outlive its workdir (benchmarks/experiment.py `results`): every
eval's per-query outcomes go beside the JSON, an eval the workdir lacks keeps its committed
figures, and paired comparisons are computed from the kept predictions, on the same queries
only. Checked on the toy pipeline's real evals, against differences counted by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest

from stages.eval.config import EvalConfig
from stages.eval.metrics import mcnemar_exact_p
from stages.eval.stage import evaluate
from tests.fixtures.pipeline import copy_of, pipeline  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("experiment", ROOT / "benchmarks/experiment.py")
experiment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(experiment)

CFG = {
    "test_queries": 4,
    "sft": {"steps": 1},
    "rl": {"steps": 1},
    "runs": {"x": {}},
    "baselines": ["random"],
}


@pytest.fixture
def evals(copy_of):  # noqa: F811
    """eval-sft (the random baseline's answers), eval-x (attribute's) and eval-random."""
    for baseline, output in (("random", "eval-sft"), ("attribute", "eval-x")):
        evaluate(copy_of, EvalConfig(baseline=baseline, bootstrap=0, output=output))
    return copy_of


def correct(store, name: str) -> dict[str, bool]:
    rows = store.resolve(name).read("predictions").select("query_id", "correct")
    return dict(rows.iter_rows())


def test_results_record_each_eval_and_its_queries_and_pair_by_hand(evals) -> None:
    res, predictions, notes = experiment.results(evals.root, CFG)
    assert notes == []
    assert set(res["runs"]) == {"sft", "x"} and set(res["baselines"]) == {"random"}
    x_eval = evals.resolve("eval-x")
    assert res["runs"]["x"]["eval"] == f"{x_eval.ref}#{x_eval.manifest.content_hash[:12]}"
    assert res["runs"]["x"]["queries"] == res["runs"]["sft"]["queries"]
    assert res["runs"]["x"]["queries"].startswith("queries@")
    # three evals (sft, x, random), a row per test query each
    assert predictions.height == 3 * res["runs"]["x"]["n"] > 0
    assert set(predictions["eval_name"]) == {"eval-sft", "eval-x", "eval-random"}
    x, sft = correct(evals, "eval-x"), correct(evals, "eval-sft")
    by_hand = sum(x[q] - sft[q] for q in x) / len(x)
    assert by_hand > 0  # attribute reads the facts; random does not
    paired = res["paired_vs_sft"]["x"]
    assert paired["diff"] == pytest.approx(by_hand, abs=1e-4) and paired["n"] == len(x)
    assert paired["evals"] == [res["runs"]["x"]["eval"], res["runs"]["sft"]["eval"]]
    only = sum(x[q] and not sft[q] for q in x), sum(sft[q] and not x[q] for q in x)
    assert (paired["only_run"], paired["only_against"]) == only and only[0] > 0
    assert paired["mcnemar_p"] == pytest.approx(mcnemar_exact_p(*only), rel=1e-2)
    # sft-grpo was never run: no comparison against it
    assert "paired_vs_grpo" not in res


def test_results_without_the_workdir_keep_the_committed_figures_and_recompute_pairs(
    evals, tmp_path
) -> None:
    res, predictions, _ = experiment.results(evals.root, CFG)
    path = tmp_path / "kept.parquet"
    predictions.write_parquet(path)  # as the results file is written, and read back
    committed = res | {"paired_vs_sft": {"x": res["paired_vs_sft"]["x"] | {"diff": 99.0}}}
    again, kept, notes = experiment.results(
        tmp_path / "gone", CFG, committed, pl.read_parquet(path)
    )
    assert again["runs"] == res["runs"] and again["baselines"] == res["baselines"]
    # recomputed from the kept predictions, not copied from the committed file
    assert again["paired_vs_sft"] == res["paired_vs_sft"]
    assert kept.equals(predictions)
    assert sorted(notes) == sorted(
        f"{k}: kept ({v})"
        for k, v in (
            ("sft", res["runs"]["sft"]["eval"]),
            ("x", res["runs"]["x"]["eval"]),
            ("random", res["baselines"]["random"]["eval"]),
        )
    )
    # the predictions file lost too: the figures stay, the pairs cannot be made anew but
    # neither side changed, so the committed one stays
    lost, rows, notes = experiment.results(tmp_path / "gone", CFG, res, None)
    assert lost["runs"] == res["runs"] and rows.height == 0
    assert lost["paired_vs_sft"] == res["paired_vs_sft"]
    assert f"x: kept ({res['runs']['x']['eval']}; its predictions are missing)" in notes


def test_a_differing_eval_is_recorded_beside_the_committed_one_unless_replaced(
    evals, tmp_path
) -> None:
    # the results of an earlier workdir, written before evals were recorded: no eval ids, no
    # predictions, pairs named by their run alone. The workdir now holds only the sft's eval,
    # with other figures.
    old = {
        "runs": {
            "sft": {"accuracy": 0.9, "accuracy_ci": [0.8, 1.0]},
            "x": {"accuracy": 0.5, "accuracy_ci": [0.1, 0.9]},
            "gone-from-config": {"accuracy": 0.1, "accuracy_ci": [0.0, 0.2]},
        },
        "paired_vs_sft": {"x": {"diff": -0.4, "ci": [-0.9, 0.1], "n": 4, "against": "sft"}},
    }
    named_pair = {"x": {"run": "x"} | old["paired_vs_sft"]["x"]}
    only_sft = _only_sft(evals, tmp_path)
    res, predictions, notes = experiment.results(only_sft, CFG, old, None)
    # x was trained from the committed sft, and the pair describes it: both stay; the new
    # eval is recorded beside them, and said
    assert res["runs"] == old["runs"] and res["paired_vs_sft"] == named_pair
    assert res["reruns"]["sft"]["eval"].startswith("eval-sft@")
    # neither committed entry has predictions; the rerun's are kept
    assert set(predictions["eval"]) == {res["reruns"]["sft"]["eval"]}
    assert "gone-from-config: not in the config; kept as committed" in notes
    assert any(
        n.startswith(f"sft: {res['reruns']['sft']['eval']} (accuracy ")
        and "does not reproduce eval-sft of an earlier workdir (accuracy 0.9)" in n
        and n.endswith("(--replace sft takes the new one)")
        for n in notes
    )
    # --replace takes it; the pair no longer describes these two evals: dropped, and said
    res, predictions, notes = experiment.results(only_sft, CFG, old, None, ("sft",))
    assert res["runs"]["sft"]["eval"].startswith("eval-sft@") and "reruns" not in res
    assert set(predictions["eval_name"]) == {"eval-sft"}
    replaced = "sft: eval-sft of an earlier workdir (accuracy 0.9) replaced by eval-sft@"
    assert any(n.startswith(replaced) and n.endswith("as --replace says") for n in notes)
    assert "paired_vs_sft" not in res
    dropped = "paired_vs_sft x: dropped; x or sft changed and the other has no predictions"
    assert any(n.startswith(dropped) for n in notes)
    # a committed pair of the same run against another reference is another comparison: it
    # goes under paired_other, by the same rules (here its reference has no entry: dropped)
    other = old | {"paired_vs_sft": {"x": old["paired_vs_sft"]["x"] | {"against": "y"}}}
    res3, _, notes = experiment.results(tmp_path / "gone", CFG, other, None)
    assert "paired_vs_sft" not in res3 and "paired_other" not in res3
    assert any(n.startswith("paired_other x vs y: dropped") for n in notes)


def test_results_of_the_first_run_name_their_references_by_key(tmp_path) -> None:
    # pairs written before they named their run and reference (the first run's results)
    old = {
        "runs": {r: {"accuracy": 0.1, "accuracy_ci": [0.0, 0.2]} for r in ("sft", "g", "x")},
        "paired_vs_sft": {"x": {"diff": 0.1, "ci": [0.0, 0.2], "n": 9}},
        "paired_vs_grpo": {"x": {"diff": 0.2, "ci": [0.1, 0.3], "n": 9}},
    }
    cfg = CFG | {"runs": {"g": {}, "x": {}}, "grpo_of": {"x": "g"}}
    res, _, notes = experiment.results(tmp_path / "gone", cfg, old, None)
    assert res["paired_vs_sft"]["x"] == {"run": "x", "against": "sft"} | old["paired_vs_sft"]["x"]
    assert res["paired_vs_grpo"]["x"]["against"] == "g"


def test_an_eval_reproduces_only_with_the_same_answers_where_they_were_kept(
    evals, tmp_path
) -> None:
    res, predictions, _ = experiment.results(evals.root, CFG)
    sft = res["runs"]["sft"]
    # committed under another content hash, with the same figures but one answer flipped
    moved = sft["eval"][:-12] + "0" * 12
    first = predictions.filter(pl.col("eval") == sft["eval"])["query_id"][0]
    flipped = predictions.with_columns(
        eval=pl.when(pl.col("eval") == sft["eval"]).then(pl.lit(moved)).otherwise("eval"),
        correct=pl.when((pl.col("eval") == sft["eval"]) & (pl.col("query_id") == first))
        .then(~pl.col("correct"))
        .otherwise("correct"),
    )
    committed = res | {"runs": res["runs"] | {"sft": sft | {"eval": moved}}}
    again, _, notes = experiment.results(evals.root, CFG, committed, flipped)
    assert again["runs"]["sft"]["eval"] == moved
    assert json.dumps(again["reruns"]["sft"]) == json.dumps(sft)  # NaN intervals: as JSON
    # both evals' answers are kept, and stay when the workdir is gone
    _, kept, _ = experiment.results(evals.root, CFG, committed, flipped)
    assert {moved, sft["eval"]} <= set(kept["eval"])
    gone, kept_gone, _ = experiment.results(tmp_path / "gone", CFG, again, kept)
    assert gone["reruns"]["sft"]["eval"] == sft["eval"]
    assert {moved, sft["eval"]} <= set(kept_gone["eval"])
    assert any(n.startswith(f"sft: {sft['eval']} (accuracy") for n in notes)
    # the same answers: reproduced, and the workdir's eval takes the place
    same = predictions.with_columns(
        eval=pl.when(pl.col("eval") == sft["eval"]).then(pl.lit(moved)).otherwise("eval")
    )
    again, _, notes = experiment.results(evals.root, CFG, committed, same)
    assert json.dumps(again["runs"]["sft"]) == json.dumps(sft) and "reruns" not in again
    reproduced = f"sft: {sft['eval']} reproduces every figure of {moved} and every answer"
    assert reproduced in notes


def test_results_pair_each_other_comparison_of_a_run_apart(evals) -> None:
    cfg = CFG | {"runs": {"x": {}, "y": {}}, "paired": [["x", "sft"], ["x", "random"]]}
    res, _, _ = experiment.results(evals.root, cfg | {"baselines": []})
    # eval-random is not a run here: the second pair has no side to pair with
    assert list(res["paired_other"]) == ["x vs sft"]
    assert res["paired_other"]["x vs sft"]["run"] == "x"
    assert res["paired_other"]["x vs sft"]["diff"] == res["paired_vs_sft"]["x"]["diff"]


def test_results_refuse_to_pair_evals_of_different_queries(evals, tmp_path) -> None:
    res, predictions, _ = experiment.results(evals.root, CFG)
    other = "queries@000000000000#000000000000"
    res["runs"]["x"]["queries"] = other
    moved = predictions.with_columns(
        queries=pl.when(pl.col("eval_name") == "eval-x").then(pl.lit(other)).otherwise("queries")
    )
    again, _, notes = experiment.results(_only_sft(evals, tmp_path), CFG, res, moved)
    assert "paired_vs_sft" not in again
    assert "paired_vs_sft x: x and sft read different queries" in notes


def _only_sft(store, tmp_path: Path) -> Path:
    """A workdir holding the store's queries and eval-sft only (the others lost)."""
    import shutil

    root = tmp_path / "only-sft"
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(store.root, root, symlinks=True)
    for name in ("eval-x", "eval-random"):
        shutil.rmtree(root / name)
    return root


def test_paired_across_workdirs_pairs_the_same_queries_and_refuses_others(
    evals, tmp_path, capsys
) -> None:
    from stages.queries.config import MakeQueriesConfig
    from stages.queries.stage import make_queries

    spec = importlib.util.spec_from_file_location("across", ROOT / "benchmarks/paired_across.py")
    across = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(across)
    other = _only_sft(evals, tmp_path)  # a second workdir, the same queries
    argv = ["paired_across.py", str(evals.root), "eval-x", str(other), "eval-sft"]
    with pytest.MonkeyPatch.context() as m:
        m.setattr("sys.argv", argv)
        assert across.main() == 0
    x, sft = correct(evals, "eval-x"), correct(evals, "eval-sft")
    by_hand = sum(x[q] - sft[q] for q in x) / len(x)
    only = sum(x[q] and not sft[q] for q in x), sum(sft[q] and not x[q] for q in x)
    printed = capsys.readouterr().out
    assert (
        f"{by_hand:+.3f}" in printed
        and f"right only for the first: {only[0]}, only for the second: {only[1]}" in printed
    )
    # two evals pooled on one side: each query counts the share of them that got it right
    pooled_argv = ["paired_across.py", str(evals.root), "eval-x+eval-sft", str(other), "eval-sft"]
    with pytest.MonkeyPatch.context() as m:
        m.setattr("sys.argv", pooled_argv)
        assert across.main() == 0
    pooled = capsys.readouterr().out
    assert pooled.startswith("mean of eval-x@") and f": {by_hand / 2:+.3f} [" in pooled
    assert "McNemar" not in pooled  # right-or-wrong counts do not apply to a mean
    # the same from the committed predictions file, on either side
    _, predictions, _ = experiment.results(evals.root, CFG)
    kept = tmp_path / "predictions.parquet"
    predictions.write_parquet(kept)
    for sides in ([str(kept), "eval-x", str(other), "eval-sft"],
                  [str(kept), "eval-x", str(kept), "eval-sft"]):  # fmt: skip
        with pytest.MonkeyPatch.context() as m:
            m.setattr("sys.argv", ["paired_across.py", *sides])
            assert across.main() == 0
        assert capsys.readouterr().out == printed
    bad = tmp_path / "results.json"
    bad.write_text("{}")
    for sides, error in (
        ([kept, "eval-y", kept, "eval-sft"], f"error: {kept}: eval-y is not in it (evals there: "),
        ([bad, "eval-x", kept, "eval-sft"], f"error: {bad}: not a predictions file ("),
        ([kept, "eval-x+eval-x", kept, "eval-sft"], "error: eval-x+eval-x: an eval is named twice"),
        ([tmp_path / "nowhere", "eval-x", kept, "eval-sft"], "neither a workdir nor a predictions"),
    ):
        with pytest.MonkeyPatch.context() as m:
            m.setattr("sys.argv", ["paired_across.py", *map(str, sides)])
            assert across.main() == 2
        err = capsys.readouterr().err
        assert err.startswith(error) or error in err, err
        assert len(err.strip().splitlines()) == 1
    # the second workdir's sft evaluated again, on queries made with other settings
    from stages.core.store import ArtifactStore

    store = ArtifactStore(other)
    make_queries(store, MakeQueriesConfig(train_size=6, valid_size=2, test_size=5, candidates=5))
    evaluate(store, EvalConfig(baseline="random", bootstrap=0, output="eval-sft"))
    with pytest.MonkeyPatch.context() as m:
        m.setattr("sys.argv", argv)
        assert across.main() == 2
    assert "evaluated different queries" in capsys.readouterr().err


def test_the_experiment_refuses_unknown_names_in_one_line(capsys) -> None:
    for args in (["--only", "sft-ppo"], ["--results", "--only", "sft-ppo"], ["--replace", "zz"]):
        with pytest.MonkeyPatch.context() as m:
            m.setattr("sys.argv", ["experiment.py", "--dry-run", *args])
            with pytest.raises(SystemExit) as exit_:
                experiment.main()
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --") and "not in the config" in err[0]


def test_draws_of_one_recipe_are_pooled_against_the_sft_by_hand(evals, tmp_path) -> None:
    evaluate(evals, EvalConfig(baseline="popular", bootstrap=0, output="eval-y"))
    cfg = CFG | {"runs": {"x": {}, "y": {}}, "draws": {"xy": ["x", "y"]}}
    res, predictions, notes = experiment.results(evals.root, cfg)
    x, y, sft = (correct(evals, f"eval-{n}") for n in ("x", "y", "sft"))
    by_hand = sum((x[q] + y[q]) / 2 - sft[q] for q in sft) / len(sft)
    assert x != y  # two draws that differ, so the mean is not either one
    d = res["draws_vs_sft"]["xy"]
    assert d["diff"] == pytest.approx(by_hand, abs=1e-4) and d["n"] == len(sft)
    assert d["accuracy"] == pytest.approx(sum(x[q] + y[q] for q in x) / (2 * len(x)), abs=1e-4)
    assert d["evals"] == [res["runs"]["x"]["eval"], res["runs"]["y"]["eval"]]
    assert d["ci"][0] <= d["diff"] <= d["ci"][1]
    assert d["draws"] == ["x", "y"] and d["against_eval"] == res["runs"]["sft"]["eval"]
    lo, hi = d["ci_draws_and_queries"]  # the draws resampled too: wider
    assert lo <= d["ci"][0] and d["ci"][1] <= hi
    # the table prints it
    tables = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks/readme_tables.py")
    readme_tables = importlib.util.module_from_spec(tables)
    tables.loader.exec_module(readme_tables)
    assert f"- mean of x, y − sft: {by_hand:+.3f} [" in readme_tables.experiment_table(res)
    # a draw whose committed entry kept no answers is pooled with its rerun's, said in a note
    rerun = res | {
        "runs": res["runs"] | {"y": res["runs"]["y"] | {"eval": "eval-y@000000000000#0"}},
        "reruns": {"y": res["runs"]["y"]},
    }
    again, _, notes = experiment.results(tmp_path / "gone", cfg, rerun, predictions)
    assert again["draws_vs_sft"]["xy"]["diff"] == d["diff"]
    assert again["draws_vs_sft"]["xy"]["reruns"] == ["y"] and "reruns" not in d
    assert "- mean of x, y (rerun) − sft: " in readme_tables.experiment_table(again)
    assert any(n.startswith("draws_vs_sft xy: y is pooled with its rerun's answers") for n in notes)
    # a draw whose answers were not kept is not pooled, and the note says which
    without_y = predictions.filter(pl.col("eval_name") != "eval-y")
    never = {k: v for k, v in res.items() if k != "draws_vs_sft"}
    again, _, notes = experiment.results(tmp_path / "gone", cfg, never, without_y)
    assert "draws_vs_sft" not in again
    assert "draws_vs_sft xy: no answers kept for y" in notes
    # ... and a committed entry stays when its answers are gone
    kept, _, notes = experiment.results(tmp_path / "gone", cfg, res, without_y)
    assert kept["draws_vs_sft"] == res["draws_vs_sft"]
    assert "draws_vs_sft xy: kept as committed" in notes


def test_draws_must_name_two_runs_of_the_config(tmp_path, capsys) -> None:
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/experiment/smollm2-cpu.yaml").read_text())
    for draws in (
        {"r": ["sft-rerec", "sft-rerec-99"]},
        {"r": ["sft-rerec"]},
        {"r": ["sft-rerec", "sft-rerec"]},
        {"r": ["sft-rerec", "sft-rerec", "sft-grpo"]},
        {"r": None},
        {"r": "sft-rerec"},
        ["sft-rerec", "sft-grpo"],
    ):
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg | {"draws": draws}))
        with pytest.MonkeyPatch.context() as m:
            m.setattr("sys.argv", ["experiment.py", "--dry-run", "--config", str(path)])
            with pytest.raises(SystemExit) as exit_:
                experiment.main()
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: draws"), err
