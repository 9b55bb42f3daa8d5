"""The `policy` artifact: a recommendation policy trained by `rerec train` (a PEFT adapter or full
weights, with the tokenizer), its per-step training log, every rollout's scores and the
curriculum's per-epoch difficulty table."""

from __future__ import annotations

import polars as pl

from schemas.base import ArtifactSchema, TableSchema

# Per optimizer step. Reward components are means over the step's completions (all processes).
LOG = TableSchema(
    "log",
    {
        "step": pl.Int32,
        "epoch": pl.Int32,  # curriculum epoch (pass over the training queries) of the step's data
        "reward": pl.Float64,
        "reward_std": pl.Float64,
        "format": pl.Float64,
        "ndcg": pl.Float64,
        "qas": pl.Float64,
        "pas": pl.Float64,
        "accuracy": pl.Float64,  # first recommended item is a ground-truth item (hit@1)
        "valid_format": pl.Float64,  # share of completions with a \boxed{} answer
        "kl": pl.Float64,  # null when beta = 0
        "loss": pl.Float64,
        "grad_norm": pl.Float64,
        "learning_rate": pl.Float64,
        "completion_length_mean": pl.Float64,
        "completion_length_max": pl.Float64,
        "clip_fraction": pl.Float64,  # share of tokens whose ratio left [1-eps, 1+eps]
        "penalised_token_share": pl.Float64,  # RAAE: share of tokens in penalised segments
        "seconds": pl.Float64,
    },
    "one row per optimizer step",
    timing_columns=("seconds",),
)

# One row per scored completion, gathered over processes; feeds the curriculum.
ROLLOUTS = TableSchema(
    "rollouts",
    {
        "step": pl.Int32,
        "epoch": pl.Int32,
        "query_id": pl.String,
        "family": pl.String,
        "reward": pl.Float64,
        "format": pl.Float64,
        "ndcg": pl.Float64,
        "qas": pl.Float64,
        "pas": pl.Float64,
        "correct": pl.Boolean,
        "completion_tokens": pl.Int32,
        "completion": pl.String,  # the text, as TRL's log_completions shows it
    },
    "every scored completion of training, with its query id and text",
)

# Per curriculum epoch from the second on: each training query's difficulty and fate.
CURRICULUM = TableSchema(
    "curriculum",
    {
        "epoch": pl.Int32,
        "query_id": pl.String,
        "difficulty": pl.Float64,  # mean 1 - ndcg (or normalised 1 - reward) of its last rollouts
        "kept": pl.Boolean,  # False: mastered (difficulty < tau) and dropped this epoch
        "position": pl.Int32,  # order in the epoch (easy first); null when dropped
        "fallback": pl.Boolean,  # too few survived: the epoch used every query
    },
    "the curriculum's difficulty estimate and order per epoch",
)

POLICY = ArtifactSchema(
    name="policy",
    # 2: rollouts keep each completion's text. 3: model/adapter_config.json lists its target
    # modules sorted (PEFT writes them in set order, which changed between identical runs);
    # version 2 artifacts read the same. 4: trained with MKL's conditional numerical
    # reproducibility on (stages/core/numerics.py), so the same config and inputs can give other
    # weights than before; the layout is unchanged, so versions 3 and 2 read the same
    version=4,
    reads=(3, 2),
    kind="policy",
    description="LLM recommendation policy trained with GRPO / ReRec / REINFORCE++",
    produced_by="rerec train --force",
    tables={t.name: t for t in (LOG, ROLLOUTS, CURRICULUM)},
    # policy.json: base model, adapter or full weights, algorithm; model/: loadable folder
    files=("policy.json", "model/tokenizer_config.json"),
    variants=True,
)
