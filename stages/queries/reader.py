"""Reading a `queries` artifact: one split, some families, a seeded sample, a half of the train
split. Every stage that consumes queries (sft, train, eval) reads them here, not from the stage
that makes them."""

from __future__ import annotations

import polars as pl

from stages.core.artifact import Artifact
from stages.core.errors import UserError

# domain -> (the noun and the verb its requests use: "Which film should I watch?")
NOUN = {"movies": ("film", "watch"), "books": ("book", "read")}


def read_split(
    queries: Artifact,
    split: str,
    *,
    families: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    part: str = "all",
) -> pl.DataFrame:
    """One split of a queries artifact (optionally some families, and a seeded sample of
    ``limit`` rows), sorted by query id; an empty selection is a user error.

    ``part`` halves the train split for a cold start: ``sft`` takes every other query of each
    family in query-id order, ``rl`` the rest, so supervised and RL training never share a
    query; ``all`` takes every query."""
    df = queries.read("queries").filter(pl.col("split") == split)
    if families:
        df = df.filter(pl.col("family").is_in(families))
    df = df.sort("query_id")
    if part != "all":
        half = pl.int_range(pl.len()).over("family") % 2 == (0 if part == "sft" else 1)
        df = df.filter(half)
    if df.height == 0:
        what = f" of families {', '.join(families)}" if families else ""
        where = f" in its {part} part" if part != "all" else ""
        raise UserError(f"{queries.ref} has no {split} queries{what}{where}")
    if limit is not None and limit < df.height:
        df = df.sample(n=limit, seed=seed).sort("query_id")
    return df
