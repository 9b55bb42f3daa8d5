"""Seeded draws that depend on a table's content only, and the sampling of pools into splits."""

from __future__ import annotations

import numpy as np
import polars as pl

from schemas.queries import SPLITS
from stages.core.errors import UserError
from stages.queries.config import MakeQueriesConfig


def shuffled(df: pl.DataFrame, key: list[str], rng: np.random.Generator) -> pl.DataFrame:
    """``df`` sorted by ``key`` (columns that tell its rows apart; rows equal on them must be
    equal throughout) with a uniform ``rand`` column. Random numbers are dealt by row position,
    and joins, group-bys and `unique` leave the row order to polars' threads: sorting first
    makes the draw a function of the table's content and the seed only."""
    df = df.sort(key)
    return df.with_columns(rand=pl.Series(rng.random(df.height)))


def pick(
    df: pl.DataFrame,
    by: list[str],
    key: list[str],
    rng: np.random.Generator,
    weight: str | None = None,
) -> pl.DataFrame:
    """One row per ``by`` group, uniformly (or proportionally to ``weight``) at random;
    ``key`` tells the rows apart (see `shuffled`). The result is sorted by ``key``."""
    df = shuffled(df, key, rng).with_columns(rand=-pl.col("rand").log())
    if weight is not None:
        df = df.with_columns(rand=pl.col("rand") / pl.col(weight).cast(pl.Float64).clip(1e-9))
    picked = df.sort("rand", *key).unique(by, keep="first", maintain_order=True)
    return picked.drop("rand").sort(key)


# ------------------------------------------------------------------ sampling into splits
def _pool_key(pool: pl.DataFrame) -> list[str]:
    """The columns that tell a pool's rows apart: (user, positive, condition attributes)."""
    return [c for c in ("user_id", "item_id", "c1_attr_id", "c2_attr_id") if c in pool.columns]


def _user_groups(
    users: pl.Series, cfg: MakeQueriesConfig, rng: np.random.Generator
) -> pl.DataFrame:
    total = sum(cfg.size(s) for s in SPLITS) or 1
    shares = np.array([cfg.size(s) / total for s in SPLITS])
    perm = rng.permutation(users.len())
    cuts = np.floor(np.cumsum(shares) * users.len()).astype(int)
    labels = np.empty(users.len(), dtype=object)
    start = 0
    for split, end in zip(SPLITS, cuts, strict=True):
        labels[perm[start:end]] = split
        start = end
    labels[perm[start:]] = SPLITS[-1]
    return pl.DataFrame({"user_id": users, "user_split": labels.astype(str)})


def assign_splits(
    pools: dict[str, pl.DataFrame],
    cfg: MakeQueriesConfig,
    rng: np.random.Generator,
    users: pl.Series,
) -> pl.DataFrame:
    groups = _user_groups(users, cfg, rng) if cfg.users_disjoint else None
    chosen: list[pl.DataFrame] = []
    held_out = pl.DataFrame(schema={"user_id": pl.Int32, "item_id": pl.Int32})
    for split in ("test", "valid", "train"):
        for family, pool in pools.items():
            want = cfg.size(split)
            if want == 0:
                continue
            rows = pool
            if groups is not None:
                rows = rows.join(
                    groups.filter(pl.col("user_split") == split).select("user_id"),
                    on="user_id",
                    how="semi",
                )
            if family == "interest" and groups is None:
                # Time holds out: the last liked item tests, the one before validates.
                rows = rows.filter(
                    {
                        "test": pl.col("from_end") == 0,
                        "valid": pl.col("from_end") == 1,
                        "train": pl.col("from_end") >= 2,
                    }[split]
                )
            if split == "train":
                rows = rows.join(held_out, on=["user_id", "item_id"], how="anti")
            elif chosen:
                # Valid and test queries never share a (user, positive) either.
                rows = rows.join(held_out, on=["user_id", "item_id"], how="anti")
            if family == "interest" and split != "train":
                rows = pick(rows, ["user_id"], ["user_id", "item_id"], rng)  # one per user
            if rows.height < want:
                raise UserError(
                    f"only {rows.height} {family} queries can be made for the {split} split "
                    f"(asked for {want}); lower --{split}-size, or use a larger graph"
                )
            key = _pool_key(rows)
            picked = shuffled(rows, key, rng).sort("rand", *key).head(want)
            picked = picked.drop("rand").with_columns(family=pl.lit(family), split=pl.lit(split))
            chosen.append(picked)
            if split != "train":
                held_out = pl.concat(
                    [
                        held_out,
                        picked.select(
                            pl.col("user_id").cast(pl.Int32), pl.col("item_id").cast(pl.Int32)
                        ),
                    ]
                )
    return pl.concat(chosen, how="diagonal_relaxed")
