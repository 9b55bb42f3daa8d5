"""The config of `rerec pretrain-cf`, apart from the stage so that the CLI can show its help
without importing torch (which costs about 3 s on every `rerec` command)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas import check_name
from stages.core.config import StageConfig


class PretrainCFConfig(StageConfig):
    """Options of `rerec pretrain-cf`."""

    graph: str = Field(default="graph", description="graph artifact to read (NAME[@VERSION])")
    output: str | None = Field(
        default=None, description="artifact to write (default: cf, or cf-X for graph-X)"
    )
    split: Literal["random", "leave-last-out"] = Field(
        default="random",
        description="random: each user's interactions shuffled and cut 80/10/10 (RecBole RS, "
        "group_by user); leave-last-out: each user's last interaction by time is the test, "
        "the one before it validation",
    )
    valid_ratio: float = Field(default=0.1, ge=0, lt=1, description="random split: validation")
    test_ratio: float = Field(default=0.1, gt=0, lt=1, description="random split: test share")
    embedding_dim: int = Field(default=64, gt=0, description="embedding size")
    layers: int = Field(default=2, ge=0, description="LightGCN propagation layers")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(default=2048, gt=0, description="training pairs per step")
    reg_weight: float = Field(default=1e-4, ge=0, description="L2 weight on layer-0 embeddings")
    epochs: int = Field(default=300, gt=0, description="maximum epochs")
    patience: int = Field(
        default=10, ge=0, description="stop after this many epochs without a better valid NDCG@10"
    )
    eval_batch_users: int = Field(default=2048, gt=0, description="users scored at once")
    seed: int = Field(default=2020, description="seed of the split, initialisation and sampling")
    device: str = Field(
        default="auto",
        description="torch device: auto (cuda where torch sees a GPU, else cpu), cpu, cuda, "
        "cuda:1, ...; recorded resolved, so CPU and GPU embeddings are different versions",
    )

    @model_validator(mode="after")
    def _check(self) -> PretrainCFConfig:
        if self.valid_ratio + self.test_ratio >= 1:
            raise ValueError("valid_ratio + test_ratio must leave something to train on")
        if self.output is not None:
            check_name(self.output, "cf")
        return self

    def artifact_name(self, graph_name: str) -> str:
        if self.output:
            return self.output
        return "cf" + graph_name.removeprefix("graph")
