"""Writing a `policy` artifact: the adapter or weights, policy.json, the log, rollouts and
curriculum tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from schemas.policy import CURRICULUM, LOG, ROLLOUTS
from stages.core.artifact import Artifact, ArtifactWriter
from stages.llm.prompts import prompt_options
from stages.rl.config import TrainConfig
from stages.rl.inputs import Inputs
from stages.rl.trainer import RerecGRPOTrainer


# Files of the base model linked into a LoRA policy's model/ folder (see `portable_adapter`).
def _base_model_file(name: str) -> bool:
    return name in {"config.json", "generation_config.json"} or name.endswith(
        (".safetensors", ".safetensors.index.json")
    )


def portable_adapter(model_dir: Path, base: Artifact, base_path: str) -> None:
    """Make a LoRA policy's `model/` folder survive moving the workdir.

    PEFT records the base model's absolute path, which breaks when the workdir moves. The
    adapter config names the base relative to the adapter folder instead
    (``../../../<base>/<version>/model``, inside the same workdir), and the base model's config
    and weights are linked in with relative symlinks (no copy): the folder is then a complete
    transformers folder with an embedded adapter, and ``AutoModelForCausalLM.from_pretrained``
    on it loads base and adapter from any working directory, moved or not. PEFT's own
    ``AutoPeftModelForCausalLM`` resolves the base path against the working directory, so it
    needs to run from the adapter folder. rerec finds the base through policy.json (a store
    reference) and reads only the adapter from this folder.
    """
    rel = Path("..", "..", "..", base.path.parent.name, base.path.name, "model")
    config_file = model_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = rel.as_posix()
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    card = model_dir / "README.md"  # PEFT's model card repeats the path
    if card.is_file():
        card.write_text(card.read_text().replace(base_path, rel.as_posix()))
    for f in sorted(Path(base_path).iterdir()):
        if _base_model_file(f.name) and not (model_dir / f.name).exists():
            (model_dir / f.name).symlink_to(rel / f.name)


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
    if cfg.lora and inputs.model_artifact is not None:
        portable_adapter(model_dir, inputs.model_artifact, inputs.model_path)
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
