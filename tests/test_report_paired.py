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
    # and on the terminal: the difference and the McNemar counts
    assert "paired accuracy differences" in r.output
    d = paired[0]
    assert f"{d['only_run']} / {d['only_against']}" in r.output


def test_mcnemar_exact_p_by_hand_and_against_the_binomial_by_enumeration() -> None:
    from fractions import Fraction

    from stages.eval.metrics import mcnemar_exact_p

    assert mcnemar_exact_p(3, 0) == 0.25  # 2 * (1/2)^3
    assert mcnemar_exact_p(0, 0) == mcnemar_exact_p(1, 1) == 1.0
    # the counts the README quotes (sft→rerec at 48 steps against the sft: 65 / 44)
    assert mcnemar_exact_p(65, 44) == pytest.approx(0.0549, abs=1e-4)
    for n in range(1, 13):  # two-sided: every outcome no more likely than the one seen
        pmf = [Fraction(math.comb(n, k), 2**n) for k in range(n + 1)]
        for b in range(n + 1):
            brute = min(Fraction(1), sum(q for q in pmf if q <= pmf[b]))
            assert mcnemar_exact_p(b, n - b) == pytest.approx(float(brute), rel=1e-12)
            assert mcnemar_exact_p(b, n - b) == mcnemar_exact_p(n - b, b)
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def test_paired_difference_counts_the_queries_only_one_side_got_right(store) -> None:
    run = fake_eval(store, "eval-a", [True, True, True, False, True, False])
    ref = fake_eval(store, "eval-b", [True, False, False, True, True, False])
    d = paired_difference(run, ref)
    # q1, q2 right only for a; q3 right only for b
    assert (d["only_run"], d["only_against"]) == (2, 1)
    assert d["diff"] == pytest.approx(1 / 6) and d["mcnemar_p"] == 1.0


def _correct(values: list[bool]) -> pl.DataFrame:
    return pl.DataFrame({"query_id": [f"q{i:04d}" for i in range(len(values))], "correct": values})


def test_draws_bootstrap_counts_the_spread_between_draws() -> None:
    from stages.report.stage import draws_bootstrap, paired_bootstrap, pooled_correct

    rng = np.random.default_rng(3)
    one, sft = _correct(list(rng.random(300) < 0.5)), _correct(list(rng.random(300) < 0.4))
    # identical draws: no spread between them, so the interval is the queries' alone
    assert draws_bootstrap([one, one, one], sft) == pytest.approx(
        paired_bootstrap(pooled_correct([one, one, one]), sft)["ci"], abs=1e-12
    )
    # one draw right everywhere, one wrong everywhere, the reference wrong everywhere: the
    # queries do not matter and the mean is the share of the first among two draws drawn
    # with replacement (0, 1/2 or 1, with chances 1/4, 1/2, 1/4), so the interval is [0, 1]
    right, wrong = _correct([True] * 50), _correct([False] * 50)
    assert draws_bootstrap([right, wrong], wrong) == [0.0, 1.0]
    # while the queries alone see no spread at all
    assert paired_bootstrap(pooled_correct([right, wrong]), wrong)["ci"] == [0.5, 0.5]
    # one right draw of four: each resample takes four draws, so the mean is the share of
    # them that are the right one, k / 4 with k ~ Binomial(4, 1/4): P(0) = 0.32, and
    # P(k >= 3) = 0.051 > 2.5% > P(k = 4) = 0.004, so the interval is [0, 0.75]
    assert draws_bootstrap([right, wrong, wrong, wrong], wrong) == [0.0, 0.75]
    # rows are matched by query, not by position
    shuffled = one.sample(fraction=1.0, shuffle=True, seed=5)
    assert not shuffled.equals(one)
    a_, b_ = _correct(list(rng.random(300) < 0.6)), _correct(list(rng.random(300) < 0.3))
    assert draws_bootstrap([shuffled, a_, b_], sft) == draws_bootstrap([one, a_, b_], sft)
    # the same inputs and seed give the same interval
    a, b = _correct(list(rng.random(300) < 0.6)), _correct(list(rng.random(300) < 0.3))
    assert draws_bootstrap([one, a, b], sft) == draws_bootstrap([one, a, b], sft)
    wide, narrow = (
        draws_bootstrap([one, a, b], sft),
        paired_bootstrap(pooled_correct([one, a, b]), sft)["ci"],
    )
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
