"""The `eval` artifact: one model, policy or baseline evaluated on a `queries` split, scored by
the training reward code; per-query predictions and metrics per domain × family with bootstrap
confidence intervals."""

from __future__ import annotations

import polars as pl

from schemas.base import ArtifactSchema, TableSchema

# Reported per domain x family (and family "all"), in this order.
EVAL_METRICS = ("accuracy", "ndcg", "qas", "pas", "valid_format", "completion_tokens")

PREDICTIONS = TableSchema(
    "predictions",
    {
        "query_id": pl.String,
        "domain": pl.String,
        "family": pl.String,
        "completion": pl.String,
        "answers": pl.List(pl.String),  # titles in the first \boxed{}; null: no box
        "predicted_item_ids": pl.List(pl.Int32),  # resolved candidates, best first
        "reward": pl.Float64,
        "format": pl.Float64,
        "ndcg": pl.Float64,
        "qas": pl.Float64,
        "pas": pl.Float64,
        "correct": pl.Boolean,  # hit@1
        "completion_tokens": pl.Int32,
    },
    "one row per evaluated query",
)

METRICS_TABLE = TableSchema(
    "metrics",
    {
        "domain": pl.String,
        "family": pl.String,  # simple | medium | hard | interest | all
        "metric": pl.String,
        "value": pl.Float64,
        "ci_low": pl.Float64,  # percentile bootstrap over queries
        "ci_high": pl.Float64,
        "n": pl.Int32,
    },
    "mean of each metric per domain and family, with a 95% bootstrap interval",
)

EVAL = ArtifactSchema(
    name="eval",
    # 2: generated with MKL's conditional numerical reproducibility on (stages/core/numerics.py),
    # so greedy answers can differ from version 1's for the same config and inputs; same layout
    version=2,
    reads=(1,),
    kind="eval",
    description="accuracy, NDCG, QAS, PAS and format of a policy, model or baseline on a split",
    produced_by="rerec eval --force",
    tables={t.name: t for t in (PREDICTIONS, METRICS_TABLE)},
    files=("eval.json",),
    variants=True,
)
