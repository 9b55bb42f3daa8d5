"""The config of `rerec eval` (torch-free, for the CLI's help)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas import check_name
from stages.core.config import StageConfig
from stages.llm.prompts import CANDIDATE_FACTS_HELP, HISTORY_HELP, NAMED_FACTS_HELP, FactOption

BASELINES = ("random", "popular", "lightgcn", "attribute")


class EvalConfig(StageConfig):
    """Options of `rerec eval`."""

    policy: str | None = Field(
        default=None, description="policy artifact to evaluate (default: policy)"
    )
    model: str | None = Field(
        default=None,
        description="evaluate a base model instead: a model artifact, folder or hub id",
    )
    baseline: Literal["random", "popular", "lightgcn", "attribute"] | None = Field(
        default=None,
        description="evaluate a baseline instead (no LLM): random candidate, most popular, "
        "LightGCN score for the query's user, attribute match with the stated conditions",
    )
    queries: str = Field(default="queries", description="queries artifact (NAME[@VERSION])")
    split: Literal["train", "valid", "test"] = Field(default="test", description="split")
    families: list[Literal["simple", "medium", "hard", "interest"]] | None = Field(
        default=None, description="these families only (default: all)"
    )
    limit: int | None = Field(
        default=None, ge=1, description="evaluate this many queries (seeded sample)"
    )
    cf: str | None = Field(
        default=None, description="cf artifact for PAS and the lightgcn baseline (default: cf)"
    )
    output: str | None = Field(
        default=None, description="artifact to write (default: eval-<policy|model|baseline>)"
    )
    k: int | None = Field(default=None, ge=1, description="K (default: the policy's, else 1)")
    # prompt options: None takes the policy's (see stages/llm/prompts.py)
    candidate_facts: FactOption | None = Field(
        default=None, description=CANDIDATE_FACTS_HELP + " (default: the policy's, else none)"
    )
    named_facts: bool | None = Field(
        default=None, description=NAMED_FACTS_HELP + " (default: the policy's, else no)"
    )
    history: int | None = Field(
        default=None, ge=0, description=HISTORY_HELP + " (default: the policy's, else 0)"
    )
    batch_size: int = Field(default=16, ge=1, description="prompts generated together")
    max_new_tokens: int = Field(default=256, ge=1, description="generated tokens at most")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy")
    bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples for the CIs")
    seed: int = Field(default=2020, description="seed of sampling, baselines and bootstrap")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="torch device")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 weights where the CPU has AVX512-BF16 or AMX and on CUDA, "
        "else fp32",
    )
    use_vllm: bool = Field(default=False, description="generate with vLLM (the gpu extra)")
    allow_mismatch: bool = Field(
        default=False,
        description="evaluate on queries built from another graph version than the policy's "
        "training queries (a warning instead of an error)",
    )

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        given = [n for n in ("policy", "model", "baseline") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of --policy, --model, --baseline (got {', '.join(given)})")
        if self.output is not None:
            check_name(self.output, "eval")
        return self

    @property
    def source(self) -> str:
        if self.baseline:
            return "baseline"
        return "model" if self.model else "policy"
