"""`rerec make-queries` options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas import check_name
from schemas.queries import FAMILIES
from stages.core.config import StageConfig

SPECIFIC = ("director", "writer", "cast", "author", "publisher")
BROAD = ("genre", "decade", "language", "country")


class MakeQueriesConfig(StageConfig):
    """Options of `rerec make-queries`."""

    graph: str = Field(default="graph", description="graph artifact to read (NAME[@VERSION])")
    output: str | None = Field(
        default=None, description="artifact to write (default: queries, or queries-X for graph-X)"
    )
    families: list[Literal["simple", "medium", "hard", "interest"]] = Field(
        default=list(FAMILIES), description="query families to generate"
    )
    train_size: int = Field(default=1500, ge=0, description="training queries per family")
    valid_size: int = Field(default=100, ge=0, description="validation queries per family")
    test_size: int = Field(default=300, ge=0, description="test queries per family")
    candidates: int = Field(default=20, ge=2, description="candidates per query (1 positive)")
    hard_negative_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of negatives drawn as hard ones (partial matches, the false "
        "premise's items, popular items); the rest are uniform",
    )
    like_threshold: float | None = Field(
        default=None,
        description="rating at which an interaction counts as liked (default: 4 on a 1-5 scale, "
        "7 on a 1-10 scale); unrated interactions count as liked",
    )
    min_support: int = Field(
        default=2,
        ge=1,
        description="a stated condition is shared by at least this many of the user's liked items",
    )
    history_len: int = Field(default=5, ge=1, description="liked items shown in interest queries")
    popular_share: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="reference items of medium/hard queries come from this most-interacted share "
        "of the catalogue (so they are recognisable)",
    )
    users_disjoint: bool = Field(default=False, description="no user in two splits")
    seed: int = Field(default=2020, description="seed of every random choice")

    @model_validator(mode="after")
    def _check(self) -> MakeQueriesConfig:
        if self.output is not None:
            check_name(self.output, "queries")
        if not self.families:
            raise ValueError("families must name at least one family")
        if self.train_size + self.valid_size + self.test_size == 0:
            raise ValueError(
                "train_size, valid_size and test_size are all 0: ask for at least one query"
            )
        return self

    def artifact_name(self, graph_name: str) -> str:
        return self.output or "queries" + graph_name.removeprefix("graph")

    def size(self, split: str) -> int:
        return {"train": self.train_size, "valid": self.valid_size, "test": self.test_size}[split]
