"""The `cf` artifact: LightGCN user and item embeddings, the split they were trained on, the
training curve, and the model state (`model.safetensors`)."""

from __future__ import annotations

import polars as pl

from schemas.base import FLOAT32_VECTOR, ArtifactSchema, TableSchema

# Metrics computed at every evaluation, in this order (full ranking, training items masked).
METRICS = tuple(
    f"{name}@{k}" for k in (10, 20) for name in ("recall", "ndcg", "hit", "mrr", "precision")
)

ITEM_EMBEDDINGS = TableSchema(
    "item_embeddings",
    {"item_id": pl.Int32, "embedding": FLOAT32_VECTOR},
    "final LightGCN embedding of every item of the graph (mean over layers)",
)
USER_EMBEDDINGS = TableSchema(
    "user_embeddings",
    {"user_id": pl.Int32, "embedding": FLOAT32_VECTOR},
    "final LightGCN embedding of every user of the graph",
)
SPLIT = TableSchema(
    "split",
    {"user_id": pl.Int32, "item_id": pl.Int32, "split": pl.String},
    "which interactions trained (train), selected (valid) and tested (test) the model",
)
CURVE = TableSchema(
    "curve",
    {
        "epoch": pl.Int32,
        "loss": pl.Float64,
        "train_seconds": pl.Float64,
        "eval_seconds": pl.Float64,
        **{f"valid_{m}": pl.Float64 for m in METRICS},
    },
    "per epoch: mean training loss, seconds, validation metrics",
    timing_columns=("train_seconds", "eval_seconds"),
)

CF = ArtifactSchema(
    name="cf",
    version=2,  # 2: split and embeddings independent of row order and thread count
    kind="embeddings",
    description="LightGCN embeddings pretrained on the graph's interactions",
    produced_by="rerec pretrain-cf --force",
    tables={t.name: t for t in (ITEM_EMBEDDINGS, USER_EMBEDDINGS, SPLIT, CURVE)},
    files=("model.safetensors",),
    variants=True,
)
