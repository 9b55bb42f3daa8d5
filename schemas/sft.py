"""The `sft` artifact: a policy after a supervised cold start (`rerec sft`).

It is a policy like any other (`kind = policy`): `model/` holds full weights (a LoRA run's
adapter merged into its base, so RL can start from the folder as from any model), `adapter/` the
LoRA adapter itself, and `policy.json` the base model and prompt options. `log` has the loss per
step, `examples` the targets it was trained on.
"""

from __future__ import annotations

import polars as pl

from schemas.base import ArtifactSchema, TableSchema

SFT_LOG = TableSchema(
    "log",
    {
        "step": pl.Int32,
        "epoch": pl.Float64,  # fraction of passes over the examples done
        "loss": pl.Float64,  # mean cross-entropy of the completion tokens
        "token_accuracy": pl.Float64,  # share of completion tokens predicted exactly
        "learning_rate": pl.Float64,
        "grad_norm": pl.Float64,
        "tokens": pl.Int64,  # tokens (prompt + completion) processed in the step
        "tokens_per_second": pl.Float64,
        "seconds": pl.Float64,
    },
    "one row per optimizer step",
    timing_columns=("tokens_per_second", "seconds"),
)

EXAMPLES = TableSchema(
    "examples",
    {
        "query_id": pl.String,
        "family": pl.String,
        "completion": pl.String,  # the target written from the graph
    },
    "the supervised targets, one per training query",
)

SFT = ArtifactSchema(
    name="sft",
    # 2: interest targets rule a candidate out only by a shared fact the answer has (the same
    # config and inputs now give other examples and weights, so they get another version id)
    # 3: the adapter folder is the same for the same run (base named relative to the workdir,
    # target modules sorted); version 2 artifacts read the same, their adapter config differs
    # 4: with --candidate-facts index the targets add the lookup paragraph (the prompt's index
    # lines for the wanted values); the layout is unchanged, so versions 3 and 2 read the same
    # 5: an index target's lookup paragraph leaves out a line that does not list the answer
    # (3 of 3,000 ml-100k train targets, interest requests whose shared genre the prompt cut)
    # 6: the lookup paragraph is one line, the narrowest (at most 4 candidates): copying every
    # wanted value's line made half the simple and interest targets longer than 160 tokens
    # 7: trained with MKL's conditional numerical reproducibility on (stages/core/numerics.py):
    # the same config and inputs can give other weights than version 6 did; layout unchanged
    version=7,
    reads=(6, 5, 4, 3, 2),
    kind="policy",
    description="policy after a supervised cold start on graph-written answers",
    produced_by="rerec sft --force",
    tables={t.name: t for t in (SFT_LOG, EXAMPLES)},
    files=("policy.json", "model/config.json", "model/tokenizer_config.json"),
    variants=True,
)
