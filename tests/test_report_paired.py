"""Paired accuracy differences in `rerec report --paired-against`: the mean difference on the
shared queries, and a bootstrap interval that matches the normal approximation."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from schemas.eval import PREDICTIONS
from stages.core.artifact import ArtifactWriter
from stages.core.store import ArtifactStore
from stages.report.stage import paired_difference
from tests.fixtures.cli import invoke


def predictions(correct: list[bool]) -> pl.DataFrame:
    n = len(correct)
    return pl.DataFrame(
        {
            "query_id": [f"q{i:04d}" for i in range(n)],
            "domain": ["movies"] * n,
            "family": ["simple"] * n,
            "completion": [""] * n,
            "answers": [None] * n,
            "predicted_item_ids": [[]] * n,
            "reward": [0.0] * n,
            "format": [0.0] * n,
            "ndcg": [float(c) for c in correct],
            "qas": [0.0] * n,
            "pas": [0.0] * n,
            "correct": correct,
            "completion_tokens": [0] * n,
        },
        schema=PREDICTIONS.columns,
    )


def fake_eval(store: ArtifactStore, name: str, correct: list[bool]):
    def build(w: ArtifactWriter) -> None:
        w.write_table("predictions", predictions(correct))
        w.write_table(
            "metrics",
            pl.DataFrame(
                {
                    "domain": ["movies"],
                    "family": ["all"],
                    "metric": ["accuracy"],
                    "value": [float(np.mean(correct))],
                    "ci_low": [0.0],
                    "ci_high": [1.0],
                    "n": [len(correct)],
                },
            ),  # fmt: skip
        )
        (w.path / "eval.json").write_text("{}")

    return store.build(name, config={"c": correct}, build=build).artifact


def test_paired_difference_is_the_mean_difference_with_a_normal_width(store) -> None:
    rng = np.random.default_rng(3)
    b = rng.random(800) < 0.4
    a = b.copy()
    flip = rng.random(800) < 0.15  # a differs from b on ~15% of queries, mostly for the better
    a[flip] = rng.random(flip.sum()) < 0.8
    run = fake_eval(store, "eval-a", a.tolist())
    ref = fake_eval(store, "eval-b", b.tolist())
    d = paired_difference(run, ref, resamples=4000, seed=0)
    diff = a.astype(float) - b.astype(float)
    assert d["diff"] == pytest.approx(diff.mean()) and d["n"] == 800
    half = 1.96 * diff.std() / math.sqrt(diff.size)  # normal approximation of the interval
    lo, hi = d["ci"]
    assert lo < d["diff"] < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    same = paired_difference(run, run)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0]


def test_report_prints_paired_differences_against_a_run(copy_of, monkeypatch, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "rep"
    r = invoke(
        copy_of.root, monkeypatch, "report", "eval-random", "eval-popular", "--out", str(out),
        "--paired-against", "eval-random",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    paired = json.loads((out / "report.json").read_text())["paired"]
    assert [(p["label"], p["against_label"]) for p in paired] == [("popular", "random")]
    assert "## paired accuracy differences" in (out / "report.md").read_text()
