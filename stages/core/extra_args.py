"""Options rerec does not model, passed through to TRL's and PEFT's configs: the `trl:` and
`peft:` sections of a YAML config, or `--trl KEY=VALUE` / `--peft KEY=VALUE` (repeatable).

Each key must be a field of the target dataclass (GRPOConfig or SFTConfig, LoraConfig) and not
one rerec sets itself from its own options (that would be two places for one setting). They are
part of the config, so of the manifest and the version id (an empty section is left out of the
id: configs without one keep their versions).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from stages.core.errors import UserError

# The fields of the training configs (sft, train) that reach TRL and PEFT unmodelled, and the
# trackers; declared once here, used by both configs.
TrlExtra = Annotated[
    dict[str, Any],
    Field(
        description="more fields of TRL's trainer config (GRPOConfig, SFTConfig) that rerec does "
        "not set itself, KEY=VALUE (repeatable; YAML: a trl: mapping), e.g. "
        "lr_scheduler_type=cosine",
    ),
]
PeftExtra = Annotated[
    dict[str, Any],
    Field(
        description="more LoraConfig fields, KEY=VALUE (repeatable; YAML: a peft: mapping), "
        "e.g. use_rslora=true or target_modules=[q_proj,v_proj]",
    ),
]
Trackers = Annotated[
    list[str],
    Field(
        description="trackers for the training log, as TRL's report_to: tensorboard, wandb, "
        "mlflow, trackio, ... (repeatable; the pip extra of that name installs one); "
        "TensorBoard files are kept in <workdir>/.logs/<artifact>-<version>/",
    ),
]

# rerec's option for a TRL/PEFT field it sets itself, where the names differ
OWN_OPTION = {
    "learning_rate": "--lr",
    "max_steps": "--steps",
    "per_device_train_batch_size": "--micro-batch",
    "gradient_accumulation_steps": "--batch-size / --micro-batch",
    "steps_per_generation": "--prompts-per-step / --micro-batch",
    "r": "--lora-r",
    "lora_alpha": "--lora-alpha",
    "lora_dropout": "--lora-dropout",
    "seed": "--seed",
    "data_seed": "--seed",
    "bf16": "--precision",
    "use_cpu": "--device",
    "beta": "--beta",
    "epsilon": "--epsilon",
    "temperature": "--temperature",
    "num_generations": "--num-generations",
    "max_completion_length": "--max-completion-length",
    "max_length": "--max-length",
    "warmup_steps": "--warmup-ratio",
    "save_steps": "--save-steps",
    "save_only_model": "--resume (a checkpoint keeps the optimizer, schedule and RNG state)",
    "ignore_data_skip": "--resume (a resumed run skips the examples already seen)",
    "use_vllm": "--use-vllm",
    "vllm_mode": "--vllm-mode",
    "report_to": "--report-to",
    "reward_weights": "--w-format, --w-qas, --w-pas",
    "output_dir": "the run folder (workdir/.runs/)",
    "run_name": "the artifact's name and version",
}


# TrainingArguments' activation recomputation: newer transformers name the field
# `activation_checkpointing`, older ones (5.17, the lowest rerec supports) only
# `gradient_checkpointing`; either name given to `--trl` means the field this one has
CHECKPOINTING = ("activation_checkpointing", "gradient_checkpointing")


def checkpointing_field(cls: type) -> str:
    """The name of ``cls``'s activation-recomputation field in the installed transformers."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return next((name for name in CHECKPOINTING if name in fields), CHECKPOINTING[-1])


def activation_checkpointing(cls: type, on: bool) -> dict[str, bool]:
    """Recompute activations in the backward pass (rerec's default on CUDA), under the field
    name this transformers has (`checkpointing_field`)."""
    return {checkpointing_field(cls): on}


def check_extra(flag: str, cls: type, values: Mapping[str, Any], own: Mapping[str, Any] = {}):
    """``values`` for dataclass ``cls``, checked: every key a field, none that rerec sets
    (``own``: the arguments rerec passes). One line naming the key otherwise. Either name of
    the activation-recomputation field comes back as the one this transformers has."""
    fields = {f.name for f in dataclasses.fields(cls)}
    renamed = checkpointing_field(cls) if fields & set(CHECKPOINTING) else None
    given = [key for key in CHECKPOINTING if key in values]
    if renamed and len(given) > 1:
        raise UserError(f"--{flag} {' and '.join(given)}: one setting by two names; give one")
    out = {(renamed if renamed and key in CHECKPOINTING else key): v for key, v in values.items()}
    for key in out:
        if key not in fields:
            near = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise UserError(f"--{flag} {key}: not a field of {cls.__name__}{hint}")
        if key in own:
            option = OWN_OPTION.get(key)
            where = f"rerec sets it from {option}" if option else "rerec sets it itself"
            raise UserError(f"--{flag} {key}: {where}")
    return out


def check_extras(cfg: Any, trainer_config: type) -> None:
    """A stage's `trl`/`peft` keys that are not fields, checked before anything loads (the
    keys rerec sets itself are refused when its arguments are built)."""
    from peft import LoraConfig

    check_extra("trl", trainer_config, cfg.trl)
    check_extra("peft", LoraConfig, cfg.peft)


def key_values(pairs: list[str] | None, flag: str) -> dict[str, Any] | None:
    """``["lr_scheduler_type=cosine", "warmup_steps=10"]`` -> a mapping, each value read as
    YAML (numbers, booleans and lists come out typed)."""
    import yaml

    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"--{flag} {pair!r}: write it as KEY=VALUE, e.g. lr_scheduler_type=cosine"
            )
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
