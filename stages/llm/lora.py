"""The LoRA config of a training run (sft, train): every linear layer by default, anything else
of PEFT's LoraConfig through `--peft KEY=VALUE`; and the adapter folder as rerec stores it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.core.artifact import Artifact
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


# Files of the base model linked into a LoRA policy's model/ folder (see `portable_adapter`).
def _base_model_file(name: str) -> bool:
    return name in {"config.json", "generation_config.json"} or name.endswith(
        (".safetensors", ".safetensors.index.json")
    )


def portable_adapter(
    folder: Path, base: Artifact | None, base_path: str, *, link_base: bool = False
) -> None:
    """Make a PEFT adapter folder a function of the run alone, and let it survive moving the
    workdir.

    PEFT writes two things that differ between identical runs: the base model's absolute path
    (in `adapter_config.json` and its model card `README.md`), and `target_modules` in Python
    set order, which depends on the process's hash seed. The list is sorted, the keys too, and
    a base that is a store artifact is named relative to the adapter folder
    (``../../../<base>/<version>/model``: every adapter folder sits at
    ``<workdir>/<name>/<version>/<folder>``). A base given as a path keeps that path (the path
    is part of the config, so of the version id, already).

    ``link_base`` also links the base model's config and weights into the folder with relative
    symlinks (no copy): it is then a complete transformers folder with an embedded adapter,
    and ``AutoModelForCausalLM.from_pretrained`` on it loads base and adapter from any working
    directory, moved or not. PEFT's own ``AutoPeftModelForCausalLM`` resolves a relative base
    path against the working directory, so it needs to run from the adapter folder. rerec
    finds the base through policy.json (a store reference) and reads only the adapter here.
    """
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    if base is not None:
        rel = Path("..", "..", "..", base.path.parent.name, base.path.name, "model").as_posix()
        config["base_model_name_or_path"] = rel
        card = folder / "README.md"  # PEFT's model card repeats the path
        if card.is_file():
            card.write_text(card.read_text().replace(base_path, rel))
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if link_base and base is not None:
        for f in sorted(Path(base_path).iterdir()):
            if _base_model_file(f.name) and not (folder / f.name).exists():
                (folder / f.name).symlink_to(Path(rel) / f.name)
