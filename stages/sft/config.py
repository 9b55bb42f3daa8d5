"""The config of `rerec sft`, kept apart from the stage so that the CLI shows its help without
importing torch, transformers or TRL."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas import check_name
from stages.core.config import StageConfig
from stages.core.extra_args import PeftExtra, Trackers, TrlExtra
from stages.llm.prompts import CANDIDATE_FACTS_HELP, HISTORY_HELP, NAMED_FACTS_HELP, FactOption


class SFTConfig(StageConfig):
    """Options of `rerec sft`."""

    queries: str = Field(default="queries", description="queries artifact (NAME[@VERSION])")
    model: str = Field(
        default="smollm2-135m",
        description="base model: a model artifact (NAME[@VERSION]), a transformers folder, or "
        "a hub id on a machine that can reach the hub",
    )
    output: str | None = Field(
        default=None, description="artifact to write (default: sft, or sft-X for queries-X)"
    )
    part: Literal["sft", "rl", "all"] = Field(
        default="sft",
        description="which half of the train split to learn from: sft (every other query of "
        "each family; RL from the result takes the rest), rl, or all",
    )
    families: list[Literal["simple", "medium", "hard", "interest"]] | None = Field(
        default=None, description="only these query families (default: all)"
    )
    limit: int | None = Field(
        default=None, ge=1, description="at most this many queries (a seeded sample)"
    )
    allow_mismatch: bool = Field(
        default=False,
        description="go on although the queries and the model come from different versions of "
        "a common input (a warning, kept in the manifest)",
    )
    # prompts
    k: int = Field(default=1, ge=1, description="items recommended per answer")
    # The small model chooses from facts in the prompt: compact facts and the named items'
    # facts by default; `rerec train --model sft` and `rerec eval --policy sft` inherit them.
    candidate_facts: FactOption = Field(default="compact", description=CANDIDATE_FACTS_HELP)
    named_facts: bool = Field(default=True, description=NAMED_FACTS_HELP)
    history: int = Field(default=0, ge=0, description=HISTORY_HELP)
    # optimisation
    epochs: float = Field(default=1.0, gt=0, description="passes over the examples")
    steps: int | None = Field(
        default=None, ge=1, description="optimizer steps (overrides --epochs)"
    )
    batch_size: int = Field(default=4, ge=1, description="examples per optimizer step")
    # One example a forward pass has no padding and no attention mask; on this project's 2-core
    # CPU that was the fastest and the leanest (benchmarks/bench_sft_step.py); a GPU wants more
    # (the 3B preset sets 8).
    micro_batch: int = Field(
        default=1, ge=1, description="examples per forward pass (batch_size must divide by it)"
    )
    lr: float = Field(default=2e-4, gt=0, description="peak learning rate (cosine decay)")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="share of steps warming up")
    max_length: int = Field(
        default=1024, ge=16, description="tokens per example at most (a longer one is an error)"
    )
    lora: bool = Field(default=True, description="LoRA on every linear layer (else full)")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout")
    seed: int = Field(default=0, description="seed of sampling, phrasing and training")
    # Where a killed run can resume from; it changes no weight, so it is not part of the
    # version (excluded from the dumped config).
    save_steps: int = Field(
        default=10,
        ge=1,
        exclude=True,
        description="checkpoint every N steps, for --resume (not part of the version)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="torch device")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 autocast where the CPU has AVX512-BF16 or AMX (and on CUDA), "
        "else fp32",
    )
    trl: TrlExtra = {}
    peft: PeftExtra = {}
    report_to: Trackers = []

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        if self.batch_size % self.micro_batch:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of micro_batch {self.micro_batch}"
            )
        if self.output is not None:
            check_name(self.output, "sft")
        return self

    def artifact_name(self, queries_name: str) -> str:
        return self.output or "sft" + queries_name.removeprefix("queries")
