"""The config of `rerec train`, kept apart from the stage so that the CLI shows its help without
importing torch, transformers or TRL."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas import check_name
from stages.core.config import StageConfig
from stages.core.extra_args import PeftExtra, Trackers, TrlExtra
from stages.llm.prompts import CANDIDATE_FACTS_HELP, HISTORY_HELP, NAMED_FACTS_HELP, FactOption

ALGOS = ("rerec", "grpo", "reinforce++")


class TrainConfig(StageConfig):
    """Options of `rerec train`."""

    queries: str = Field(default="queries", description="queries artifact (NAME[@VERSION])")
    graph: str | None = Field(
        default=None,
        description="graph artifact for QAS (default: the one the queries were built from)",
    )
    cf: str | None = Field(
        default=None,
        description="cf artifact for PAS (default: cf, or cf-X for graph-X)",
    )
    model: str = Field(
        default="smollm2-135m",
        description="base model: a model artifact (NAME[@VERSION]), a transformers folder, or "
        "a hub id on a machine that can reach the hub",
    )
    output: str | None = Field(
        default=None, description="artifact to write (default: policy, or policy-X for queries-X)"
    )
    part: Literal["auto", "all", "rl", "sft"] = Field(
        default="auto",
        description="which half of the train split to learn from: auto (rl when starting from "
        "a `rerec sft` policy, whose examples were the other half; else all), all, rl or sft",
    )
    allow_mismatch: bool = Field(
        default=False,
        description="train although queries, graph and cf come from different versions of a "
        "common input (a warning, kept in the manifest, instead of an error)",
    )
    algo: Literal["rerec", "grpo", "reinforce++"] = Field(
        default="rerec",
        description="rerec: dual-graph reward + RAAE token advantages + curriculum; grpo: format "
        "+ NDCG reward, group-normalised scalar advantage; reinforce++: the same reward, "
        "advantage normalised over the whole batch",
    )
    raae: bool = Field(default=True, description="rerec: token-level RAAE advantages")
    qas: bool = Field(default=True, description="rerec: QAS term in the reward")
    pas: bool = Field(default=True, description="rerec: PAS term in the reward")
    curriculum: bool = Field(default=True, description="rerec: online curriculum")
    # reward
    k: int = Field(default=1, ge=1, description="items recommended per answer (NDCG@K)")
    w_format: float = Field(default=0.1, ge=0, description="weight of the ±0.5 format term")
    w_qas: float = Field(default=0.2, ge=0, description="weight w1 of QAS")
    w_pas: float = Field(default=0.1, ge=0, description="weight w2 of PAS")
    fuzzy_threshold: float = Field(
        default=85.0, ge=0, le=100, description="rapidfuzz score to accept an inexact title"
    )
    # RAAE
    w_penalty: float = Field(
        default=0.3, ge=0, description="RAAE: penalty r - w*max(|r|, 0.1) on wrong-item segments"
    )
    advantage: Literal["per-token", "per-completion"] = Field(
        default="per-token",
        description="RAAE normalisation: over all valid tokens of the group, or the G rewards",
    )
    # curriculum
    tau: float = Field(default=0.1, ge=0, le=1, description="curriculum: mastered below this")
    difficulty: Literal["ndcg", "reward"] = Field(
        default="ndcg", description="curriculum: 1 - ndcg, or normalised 1 - reward"
    )
    min_keep: int | None = Field(
        default=None,
        ge=1,
        description="curriculum: keep every query when fewer survive (default: one step's prompts)",
    )
    # data
    families: list[Literal["simple", "medium", "hard", "interest"]] | None = Field(
        default=None, description="train on these query families only (default: all)"
    )
    limit: int | None = Field(
        default=None, ge=1, description="train on this many training queries (seeded sample)"
    )
    # prompt (the same options in sft and eval; see stages/llm/prompts.py)
    # Unset (None): the starting policy's (`--model sft`), else none / off / 0.
    candidate_facts: FactOption | None = Field(
        default=None, description=CANDIDATE_FACTS_HELP + " (default: the starting policy's)"
    )
    named_facts: bool | None = Field(
        default=None, description=NAMED_FACTS_HELP + " (default: the starting policy's)"
    )
    history: int | None = Field(
        default=None, ge=0, description=HISTORY_HELP + " (default: the starting policy's)"
    )
    # model
    lora: bool = Field(default=True, description="train a LoRA adapter (else every weight)")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout")
    # optimisation (paper defaults where they apply)
    lr: float = Field(
        default=2e-5,
        gt=0,
        description="learning rate (the paper's 5e-6 is for full fine-tuning; LoRA needs more)",
    )
    beta: float = Field(
        default=0.01, ge=0, description="KL coefficient to the reference (0: no reference pass)"
    )
    epsilon: float = Field(default=0.2, gt=0, description="PPO clip range")
    num_generations: int = Field(default=5, ge=2, description="G: rollouts per query")
    prompts_per_step: int = Field(default=8, ge=1, description="queries per optimizer step")
    micro_batch: int | None = Field(
        default=None,
        ge=1,
        description="completions per forward pass and process (default: the whole step; "
        "smaller values accumulate gradients)",
    )
    max_completion_length: int = Field(default=512, ge=8, description="generated tokens at most")
    # Off, it is left out of the dumped config: runs made before the option existed computed
    # without it and keep their ids; on (the default since 2026-11-29) it is recorded.
    share_prompts: bool = Field(
        default=True,
        exclude_if=lambda v: v is False,
        description="run each prompt once for all its completions, in the rollouts' prompt "
        "pass and in the loss's forward pass (the same computation up to rounding; LoRA "
        "dropout masks shared on the prompt)",
    )
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature")
    steps: int | None = Field(
        default=None, ge=1, description="optimizer steps (default: epochs full passes)"
    )
    epochs: int = Field(default=1, ge=1, description="passes over the training queries")
    save_steps: int = Field(default=50, ge=1, description="checkpoint every N steps")
    seed: int = Field(default=2020, description="seed of sampling, data order and LoRA init")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda when available, else cpu"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 where the CPU has AVX512-BF16 or AMX (autocast: weights, LoRA "
        "and optimizer states stay fp32; rollouts from a bf16 copy) and on CUDA (bf16 "
        "weights), else fp32",
    )
    use_vllm: bool = Field(default=False, description="generate with vLLM (the gpu extra)")
    vllm_mode: Literal["colocate", "server"] = Field(
        default="colocate", description="vLLM in the training process, or `trl vllm-serve`"
    )
    trl: TrlExtra = {}
    peft: PeftExtra = {}
    report_to: Trackers = []

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.output is not None:
            check_name(self.output, "policy")
        if self.algo != "rerec":
            changed = [
                f"--no-{n}"
                for n in ("raae", "qas", "pas", "curriculum")
                if getattr(self, n) is False
            ]
            if changed:
                raise ValueError(f"{', '.join(changed)} only applies to --algo rerec")
        return self

    # What each algorithm uses: the ablation switches only change rerec.
    @property
    def use_raae(self) -> bool:
        return self.algo == "rerec" and self.raae

    @property
    def use_qas(self) -> bool:
        return self.algo == "rerec" and self.qas

    @property
    def use_pas(self) -> bool:
        return self.algo == "rerec" and self.pas

    @property
    def use_curriculum(self) -> bool:
        return self.algo == "rerec" and self.curriculum

    def artifact_name(self, queries_name: str) -> str:
        if self.output:
            return self.output
        return "policy" + queries_name.removeprefix("queries")
