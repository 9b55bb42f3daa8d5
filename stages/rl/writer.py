"""Writing a `policy` artifact: the adapter or weights, policy.json, the log, rollouts and
curriculum tables."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from schemas.policy import CURRICULUM, LOG, ROLLOUTS
from stages.core.artifact import ArtifactWriter
from stages.core.numerics import blas_reproducibility
from stages.llm.lora import portable_adapter
from stages.llm.prompts import prompt_options
from stages.rl.config import TrainConfig
from stages.rl.inputs import Inputs
from stages.rl.trainer import RerecGRPOTrainer


def write_policy(
    writer: ArtifactWriter,
    trainer: RerecGRPOTrainer,
    tokenizer: Any,
    cfg: TrainConfig,
    inputs: Inputs,
) -> None:
    model_dir = writer.file("model")
    model_dir.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    if cfg.lora:
        portable_adapter(model_dir, inputs.model_artifact, inputs.model_path, link_base=True)
    base = inputs.model_artifact.ref if inputs.model_artifact else inputs.model_path
    precision = "bf16" if trainer.args.bf16 else "fp32"
    policy = {
        "base_model": base,
        "base_model_is_artifact": inputs.model_artifact is not None,
        "adapter": cfg.lora,
        "algo": cfg.algo,
        "k": cfg.k,
        **prompt_options(cfg),  # candidate_facts, named_facts, history: eval's defaults
        "graph": inputs.graph.ref,
        "queries": inputs.queries.ref,
        "precision": precision,  # as resolved on the training machine (config: cfg.precision)
    }
    writer.file("policy.json").write_text(json.dumps(policy, indent=2) + "\n")
    writer.metrics["precision"] = precision
    writer.metrics["blas"] = blas_reproducibility()
    state = trainer.run_state
    log = (
        pl.DataFrame(state.log, schema=LOG.columns)
        if state.log
        else pl.DataFrame(schema=LOG.columns)
    )
    writer.write_table("log", log)
    writer.write_table("rollouts", pl.DataFrame(state.rollouts, schema=ROLLOUTS.columns))
    writer.write_table(
        "curriculum", pl.DataFrame(trainer.schedule.table, schema=CURRICULUM.columns)
    )
    if log.height:
        tail = log.tail(min(10, log.height))
        writer.metrics.update(
            steps=int(log["step"].max()),
            epochs=int(log["epoch"].max()) + 1,
            first_reward=float(log["reward"][0]),
            last_reward_mean10=float(tail["reward"].mean()),
            last_accuracy_mean10=float(tail["accuracy"].mean()),
            median_seconds_per_step=float(log["seconds"].median()),
            training_queries=inputs.train.height,
        )
