"""The baselines of `rerec eval --baseline`: random, popular, lightgcn, attribute.

Each ranks every (query, candidate) pair of a long table and keeps the first candidate per
query: by its score (the LightGCN dot product, or how many of the request's condition
attributes the item has), then by popularity (interactions in the graph), then by its position
in the candidate list. `popular` is the score-free case; a query whose user or candidates have
no LightGCN embedding, or with no condition attribute, is answered by popularity alone.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from stages.core.artifact import Artifact
from stages.core.errors import UserError

BASELINES = ("random", "popular", "lightgcn", "attribute")


def candidates_long(df: pl.DataFrame, graph: Artifact) -> pl.DataFrame:
    """``row, pos, item_id, user_id, pop``: one row per candidate of each query row."""
    pop = graph.read("interactions").group_by("item_id").len("pop")
    return (
        df.select("user_id", "candidate_item_ids")
        .with_row_index("row")
        .explode("candidate_item_ids")
        .rename({"candidate_item_ids": "item_id"})
        .with_columns(pos=pl.int_range(pl.len()).over("row"))
        .join(pop, on="item_id", how="left")
        .with_columns(pl.col("pop").fill_null(0))
        .sort("row", "pos")
    )


def lightgcn_scores(long: pl.DataFrame, cf: Artifact) -> pl.Series:
    """The dot product of user and item embeddings per candidate; null for every candidate of
    a query whose user or any candidate has no embedding (that query falls back to
    popularity)."""
    users = cf.read("user_embeddings").with_row_index("u")
    items = cf.read("item_embeddings").with_row_index("i")
    found = long.join(users.select("user_id", "u"), on="user_id", how="left").join(
        items.select("item_id", "i"), on="item_id", how="left"
    )
    found = found.sort("row", "pos")
    ok = found.select(ok=(pl.col("u").is_not_null() & pl.col("i").is_not_null()).all().over("row"))[
        "ok"
    ].to_numpy()
    U, V = users["embedding"].to_numpy(), items["embedding"].to_numpy()
    u = found["u"].fill_null(0).to_numpy()
    i = found["i"].fill_null(0).to_numpy()
    scores = np.einsum("nd,nd->n", V[i].astype(np.float64), U[u].astype(np.float64))
    return pl.Series("score", np.where(ok, scores, np.nan)).fill_nan(None)


def attribute_scores(long: pl.DataFrame, df: pl.DataFrame, graph: Artifact) -> pl.Series:
    """How many of the query's condition attributes each candidate has; null for every
    candidate of a query without one (it falls back to popularity)."""
    wanted = (
        df.select("conditions")
        .with_row_index("row")
        .explode("conditions")
        .select("row", attr_id=pl.col("conditions").struct.field("attr_id"))
        .drop_nulls()
        .unique()
    )
    edges = graph.read("item_attributes").select("item_id", "attr_id").unique()
    overlap = (
        long.select("row", "pos", "item_id")
        .join(wanted, on="row")
        .join(edges, on=["item_id", "attr_id"], how="semi")
        .group_by("row", "pos")
        .len("score")
    )
    scored = (
        long.select("row", "pos")
        .join(overlap, on=["row", "pos"], how="left")
        .join(wanted.select("row").unique().with_columns(has=pl.lit(True)), on="row", how="left")
        .sort("row", "pos")
    )
    return scored.select(
        score=pl.when(pl.col("has")).then(pl.col("score").fill_null(0).cast(pl.Float64))
    )["score"]


def baseline_predictions(
    kind: str, df: pl.DataFrame, graph: Artifact, cf: Artifact | None, seed: int
) -> list[int]:
    """The candidate item each baseline picks for each query row."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}")
    if kind == "random":  # one draw per query, in row order
        rng = np.random.default_rng(seed)
        return [int(ids[rng.integers(len(ids))]) for ids in df["candidate_item_ids"].to_list()]
    long = candidates_long(df, graph)
    if kind == "lightgcn":
        if cf is None:
            raise UserError("the lightgcn baseline needs a cf artifact: run `rerec pretrain-cf`")
        long = long.with_columns(score=lightgcn_scores(long, cf))
    elif kind == "attribute":
        long = long.with_columns(score=attribute_scores(long, df, graph))
    else:
        long = long.with_columns(score=pl.lit(None, dtype=pl.Float64))
    best = long.sort(
        ["row", pl.col("score").fill_null(0.0), "pop", "pos"],
        descending=[False, True, True, False],
    ).unique("row", keep="first", maintain_order=True)
    return best.sort("row")["item_id"].cast(pl.Int64).to_list()


def boxed(df: pl.DataFrame, items: list[int]) -> list[str]:
    """Each pick as the completion a model would write: its candidate title in a box."""
    ids_, titles_ = df["candidate_item_ids"].to_list(), df["candidate_titles"].to_list()
    rows = zip(ids_, titles_, items, strict=True)
    return [f"\\boxed{{{titles[ids.index(item)]}}}" for ids, titles, item in rows]
