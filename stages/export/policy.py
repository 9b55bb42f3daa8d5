"""A policy as a Hugging Face model folder: the LoRA adapter (loads with `peft` on its base
model) or, with `merged`, full weights that load with `transformers` alone; the tokenizer and
chat template; a model card that says what it is, what it was trained on and with what, and
how it scored (every eval of it in the store, with intervals); `rerec.json` with its lineage.

The folder is written next to its destination and renamed into place, so a failed export
leaves nothing half-written; an existing non-empty destination is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from stages.core.artifact import Artifact
from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.llm.prompts import SYSTEM_PROMPT

# Where a fetched model came from, for the card's `base_model` (the Hub id of the original).
KNOWN_BASES = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
FAMILIES = ("simple", "medium", "hard", "interest", "all")


def check_destination(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out} is a file; name a new or empty folder to export into")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; name a new or empty folder to export into")
    if not out.parent.is_dir():
        raise UserError(f"{out}: folder {out.parent} does not exist")


def evaluations(store: ArtifactStore, policy: Artifact) -> list[tuple[Artifact, dict[str, Any]]]:
    """Every eval artifact version of this exact policy version (an unreadable one is left
    out: the card says what could be read), with its eval.json."""
    found = []
    for name in store.names(kind="eval"):
        for version in store.version_ids(name):
            try:
                art = store.resolve(f"{name}@{version}")
                about = json.loads(art.file("eval.json").read_text())
            except UserError:
                continue
            if about.get("policy") == policy.ref:
                found.append((art, about))
    return found


def root_model(store: ArtifactStore, info: dict[str, Any]) -> tuple[Artifact | None, str]:
    """The model at the root of a policy's chain of bases (RL from an sft policy: the sft's
    own base), as (its artifact or None, its ref or path)."""
    base = str(info["base_model"])
    while info.get("base_model_is_artifact"):
        art = store.resolve(base, check_schema=False, verify=False)
        if art.manifest.kind != "policy":
            return art, base
        info = json.loads(art.file("policy.json").read_text())
        base = str(info["base_model"])
    return None, base


def base_model_id(store: ArtifactStore, info: dict[str, Any]) -> tuple[str, str, str | None]:
    """(the root base model's Hub id, or its path where no Hub id is known; how this copy of
    it was obtained; its license, None where unknown)."""
    art, base = root_model(store, info)
    if art is None:  # a folder or Hub id given with --model
        hub = base
        config = Path(base).expanduser() / "config.json"
        if config.is_file():
            hub = str(json.loads(config.read_text()).get("_name_or_path") or base)
        return hub, f"`{base}`", None
    cfg = art.manifest.config
    how = f"`{art.ref}`"
    if cfg.get("package"):
        how += f", from the PyPI wheel {cfg['package']} {cfg.get('version', '')}".rstrip()
    if cfg.get("convert"):
        how += f" ({cfg['convert']})"
    license_ = cfg.get("license")
    return KNOWN_BASES.get(art.name, art.name), how, str(license_).lower() if license_ else None


def model_card(
    store: ArtifactStore, policy: Artifact, info: dict[str, Any], *, merged: bool
) -> str:
    hub, how, license_ = base_model_id(store, info)
    m = policy.manifest
    cfg = m.config
    lineage = {ref.name: ref for _, ref, _ in store.lineage(policy)}
    library = "transformers" if merged or not info.get("adapter") else "peft"
    lines = [
        "---",
        f"base_model: {hub}",
        f"library_name: {library}",
        f"license: {license_ or 'other'}",  # the base model's; unknown for a folder
        "pipeline_tag: text-generation",
        "tags: [rerec, recommendation, grpo, reinforcement-learning, trl]",
        "---",
        "",
        f"# {policy.ref}: a recommendation assistant trained with rerec",
        "",
        f"Given a request and a numbered list of candidate items, it reasons and answers with "
        "`\\boxed{Title (Year)}`. Trained with "
        f"**{info.get('algo', cfg.get('algo', '?'))}** on `{info.get('queries')}` "
        f"(graph `{info.get('graph')}`).",
        "",
        "## Model",
        "",
        f"- base model: {hub} ({how})",
        "- weights here: "
        + (
            "full weights (any adapter merged in)"
            if library == "transformers"
            else "a LoRA adapter (load it on the base model with peft)"
        ),
        "- precision of training: "
        + str(info.get("precision") or m.metrics.get("precision") or cfg.get("precision", "?")),
        "",
        "## Training",
        "",
        "| option | value |",
        "|---|---|",
    ]
    shown = (
        "algo", "steps", "epochs", "prompts_per_step", "num_generations", "lr", "beta",
        "epsilon", "max_completion_length", "temperature", "lora", "lora_r", "lora_alpha",
        "w_format", "w_qas", "w_pas", "w_penalty", "raae", "qas", "pas", "curriculum", "tau",
        "advantage", "batch_size", "max_length", "seed", "trl", "peft",
    )  # fmt: skip
    lines += [f"| {k} | `{cfg[k]}` |" for k in shown if k in cfg and cfg[k] not in (None, {}, [])]
    if "w_qas" in cfg:
        lines += [
            "",
            f"Reward: `{cfg.get('w_format', 0.1)}·format + NDCG@{cfg.get('k', 1)} + "
            f"{cfg.get('w_qas')}·QAS + {cfg.get('w_pas')}·PAS` (QAS: attributes of the answer "
            "shared with the ground truth, from the item-attribute graph; PAS: LightGCN "
            "similarity, from the user-item graph).",
        ]
    lines += ["", "## Data", ""]
    lines += [f"- `{ref.name}@{ref.version}` (content sha256 {ref.content_hash[:16]})"
              for ref in lineage.values()]  # fmt: skip
    evals = evaluations(store, policy)
    lines += ["", "## Evaluation", ""]
    if not evals:
        lines.append("No evaluation of this policy version in the store it was exported from.")
    for art, about in evals:
        metrics = art.read("metrics").filter(pl.col("metric").is_in(["accuracy", "valid_format"]))
        lines += [
            f"`{art.ref}`: {about.get('split')} split of `{about.get('queries')}`, hit@1 among "
            "the candidates, mean [95% bootstrap interval]:",
            "",
            "| family | n | accuracy | valid format |",
            "|---|---|---|---|",
        ]
        for fam in FAMILIES:
            rows = {
                r["metric"]: r
                for r in metrics.filter(pl.col("family") == fam).iter_rows(named=True)
            }
            if "accuracy" not in rows:
                continue
            a = rows["accuracy"]
            ci = (
                f" [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
                if a["ci_low"] == a["ci_low"] and a["ci_low"] is not None
                else ""
            )
            fmt = rows.get("valid_format")
            lines.append(
                f"| {fam} | {a['n']} | {a['value']:.3f}{ci} | {fmt['value']:.3f} |"
                if fmt
                else f"| {fam} | {a['n']} | {a['value']:.3f}{ci} | |"
            )
        lines.append("")
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
    ]
    if library == "peft":
        lines += [
            "from peft import PeftModel",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{hub}")',
            'model = PeftModel.from_pretrained(base, "PATH_OR_REPO")',
        ]
    else:
        lines += ["", 'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")']
    lines += [
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")',
        "messages = [",
        f"    {{'role': 'system', 'content': {SYSTEM_PROMPT!r}}},",
        "    {'role': 'user', 'content': 'I want a comedy from the 1990s. Candidates:\\n1. ...'},",
        "]",
        "inputs = tokenizer.apply_chat_template(",
        "    messages, add_generation_prompt=True, return_tensors='pt', return_dict=True",
        ")",
        "out = model.generate(**inputs, max_new_tokens=256)",
        "print(tokenizer.decode(out[0][inputs['input_ids'].shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        f"Written by `rerec export` from `{policy.ref}` (rerec {m.code_version}; "
        f"content sha256 {m.content_hash[:16]}); `rerec.json` holds its lineage.",
        "",
    ]
    return "\n".join(lines)


def export_policy(
    store: ArtifactStore, ref: str, out: Path, *, merged: bool = False
) -> tuple[Path, bool]:
    """Write the folder (see the module docstring); its path, and whether it holds full weights
    (asked for; an sft policy, which has no adapter; or RL from an sft policy, whose adapter
    only means something on the sft's weights, which are no published model)."""
    policy = store.resolve(ref, kind="policy")
    info = json.loads(policy.file("policy.json").read_text())
    if info.get("base_model_is_artifact") and info.get("adapter"):
        base = store.resolve(str(info["base_model"]), check_schema=False, verify=False)
        merged = merged or base.manifest.kind == "policy"
    out = out.expanduser().absolute()
    check_destination(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if merged or not info.get("adapter"):
            from stages.llm.generation import load_generator

            gen = load_generator(
                store, policy=policy.ref, model=None, device="cpu", precision="fp32"
            )
            gen.model.save_pretrained(tmp, safe_serialization=True)
            gen.tokenizer.save_pretrained(tmp)
            merged = True
        else:
            model_dir = policy.file("model")
            for f in sorted(model_dir.iterdir()):
                if f.is_file() and not f.is_symlink() and f.name != "README.md":
                    shutil.copy2(f, tmp / f.name)
            adapter = json.loads((tmp / "adapter_config.json").read_text())
            adapter["base_model_name_or_path"] = base_model_id(store, info)[0]
            (tmp / "adapter_config.json").write_text(json.dumps(adapter, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(store, policy, info, merged=merged))
        provenance = {
            "policy": policy.ref,
            "content_hash": policy.manifest.content_hash,
            "code_version": policy.manifest.code_version,
            "command": policy.manifest.command,
            "policy_json": info,
            "lineage": [r.model_dump() for _, r, _ in store.lineage(policy)],
        }
        (tmp / "rerec.json").write_text(json.dumps(provenance, indent=2) + "\n")
        check_destination(out)  # nothing appeared there meanwhile
        if out.exists():
            out.rmdir()  # empty (checked)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, merged


def push_to_hub(folder: Path, repo: str, *, private: bool = False) -> str:
    """Upload the folder to a Hub model repository (created if missing) with the user's
    credentials (`hf auth login` or HF_TOKEN); the repository's URL."""
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise UserError("--push-to-hub needs Hugging Face credentials: `hf auth login` or HF_TOKEN")
    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model")
    except Exception as exc:  # network, permissions: one line with the Hub's reason
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--push-to-hub {repo}: {first}") from None
    return str(url)
