"""Scoring an eval's predictions and its metrics table with bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from schemas.eval import EVAL_METRICS
from stages.llm.answers import parse_boxed
from stages.rewards.dual_graph import RewardIndex, RewardWeights, score_batch


def score_predictions(
    df: pl.DataFrame,
    completions: list[str],
    tokens: list[int],
    index: RewardIndex,
    weights: RewardWeights,
) -> pl.DataFrame:
    queries = df.select(
        "query_id", "candidate_item_ids", "candidate_titles", "positive_item_ids"
    ).to_dicts()
    parts = score_batch(completions, queries, index, weights)
    return pl.DataFrame(
        {
            "query_id": df["query_id"],
            "domain": df["domain"],
            "family": df["family"],
            "completion": completions,
            "answers": [parse_boxed(c) for c in completions],
            "predicted_item_ids": parts["predicted"],
            "reward": parts["reward"],
            "format": parts["format"],
            "ndcg": parts["ndcg"],
            "qas": parts["qas"],
            "pas": parts["pas"],
            "correct": parts["correct"],
            "completion_tokens": tokens,
        },
        schema_overrides={
            "answers": pl.List(pl.String),
            "predicted_item_ids": pl.List(pl.Int32),
            "completion_tokens": pl.Int32,
        },
    )


def metric_values(pred: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        "accuracy": pred["correct"].cast(pl.Float64).to_numpy(),
        "ndcg": pred["ndcg"].to_numpy(),
        "qas": pred["qas"].to_numpy(),
        "pas": pred["pas"].to_numpy(),
        "valid_format": (pred["format"] > 0).cast(pl.Float64).to_numpy(),
        "completion_tokens": pred["completion_tokens"].cast(pl.Float64).to_numpy(),
    }


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test of two runs on the same queries, from the queries only the
    first got right (``only_a``) and only the second (``only_b``): under the hypothesis of
    equal accuracy each such query goes either way with probability 1/2, so the p-value is
    twice the binomial tail of the smaller count (capped at 1), in exact integers."""
    if only_a < 0 or only_b < 0:
        raise ValueError("counts must be non-negative")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def bootstrap_means(
    values: dict[str, np.ndarray], resamples: int, rng: np.random.Generator
) -> dict[str, tuple[float, float, float]]:
    """Mean and 95% percentile-bootstrap interval of each metric; the same resampled query
    sets serve every metric."""
    n = len(next(iter(values.values())))
    idx = rng.integers(0, n, size=(resamples, n)) if resamples and n else None
    out = {}
    for name, v in values.items():
        mean = float(v.mean()) if n else float("nan")
        if idx is None:
            out[name] = (mean, float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(v[idx].mean(axis=1), [2.5, 97.5])
            out[name] = (mean, float(lo), float(hi))
    return out


def metrics_table(pred: pl.DataFrame, resamples: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    groups = [
        (d, f, pred.filter((pl.col("domain") == d) & (pl.col("family") == f)))
        for d, f in pred.select("domain", "family").unique().sort("domain", "family").iter_rows()
    ]
    groups += [
        (d, "all", pred.filter(pl.col("domain") == d)) for d in sorted(pred["domain"].unique())
    ]
    for domain, family, part in groups:
        stats = bootstrap_means(metric_values(part), resamples, rng)
        for name in EVAL_METRICS:
            mean, lo, hi = stats[name]
            rows.append(
                {
                    "domain": domain,
                    "family": family,
                    "metric": name,
                    "value": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": part.height,
                }
            )
    return pl.DataFrame(rows)
