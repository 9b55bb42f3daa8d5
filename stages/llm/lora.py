"""The LoRA config of a training run (sft, train): every linear layer by default, anything else
of PEFT's LoraConfig through `--peft KEY=VALUE`."""

from __future__ import annotations

from typing import Any

from stages.core.extra_args import check_extra


def lora_config(cfg: Any):
    """PEFT's LoraConfig from a training config (``lora``, ``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``peft``), or None for full fine-tuning (``lora`` off)."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    args: dict[str, Any] = dict(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        task_type="CAUSAL_LM",
    )
    extra = check_extra("peft", LoraConfig, cfg.peft, own=args)
    return LoraConfig(**args, **({"target_modules": "all-linear"} | extra))
