"""Candidate sets: the positive plus negatives that each fail a true condition."""

from __future__ import annotations

import numpy as np
import polars as pl

from stages.core.errors import UserError
from stages.graph.view import GraphView
from stages.queries.config import SPECIFIC, MakeQueriesConfig
from stages.queries.sampling import shuffled


# ------------------------------------------------------------------ candidates
def satisfying_pairs(queries: pl.DataFrame, facts: pl.DataFrame) -> pl.DataFrame:
    """``query_id, item_id`` of every item that carries all true conditions of a query."""
    conds = (
        queries.select("query_id", "conditions")
        .explode("conditions")
        .filter(pl.col("conditions").is_not_null())
        .select("query_id", attr_id=pl.col("conditions").struct.field("attr_id"))
    )
    n = conds.group_by("query_id").len("n")
    return (
        conds.join(facts.select("item_id", "attr_id"), on="attr_id")
        .group_by("query_id", "item_id")
        .len("hit")
        .join(n, on="query_id")
        .filter(pl.col("hit") == pl.col("n"))
        .select("query_id", "item_id")
    )


def draw_candidates(
    queries: pl.DataFrame, g: GraphView, cfg: MakeQueriesConfig, rng: np.random.Generator
) -> pl.DataFrame:
    """``query_id, candidate_item_ids, positive_index, hard_negatives``."""
    n_neg = cfg.candidates - 1
    n_hard = int(round(cfg.hard_negative_share * n_neg))
    pos = queries.select("query_id", "user_id", pos_item="item_id")
    # Items a query may not use as negatives.
    excluded = [satisfying_pairs(queries, g.facts)]
    refs = (
        queries.select("query_id", "conditions")
        .explode("conditions")
        .select("query_id", item_id=pl.col("conditions").struct.field("via_item_id"))
        .drop_nulls()
    )
    excluded.append(refs)
    interest = queries.filter(pl.col("family") == "interest").select("query_id", "user_id")
    excluded.append(
        interest.join(g.interactions.select("user_id", "item_id"), on="user_id").select(
            "query_id", "item_id"
        )
    )
    excluded.append(pos.select("query_id", item_id="pos_item"))
    excluded_df = pl.concat(
        [e.with_columns(pl.col("item_id").cast(pl.Int32)) for e in excluded]
    ).unique()

    # Hard pools: partial matches of the conditions, items sharing a specific attribute or the
    # first genre with the positive, the false premise's items; popular items for interest.
    cond_attrs = (
        queries.select("query_id", "conditions")
        .explode("conditions")
        .drop_nulls()
        .select("query_id", attr_id=pl.col("conditions").struct.field("attr_id"), boost=pl.lit(1.0))
    )
    pos_attrs = pos.join(g.facts.rename({"item_id": "pos_item"}), on="pos_item").filter(
        pl.col("relation").is_in(SPECIFIC) | (pl.col("relation") == "genre")
    )
    # The first genre: the positive's most common one (attribute ids follow item counts).
    pos_attrs = (
        pos_attrs.sort("query_id", "attr_id")
        .filter(
            pl.col("relation").is_in(SPECIFIC)
            | (pl.int_range(pl.len()).over("query_id", "relation") == 0)
        )
        .select("query_id", "attr_id", boost=pl.lit(1.0))
    )
    false_attrs = (
        queries.select("query_id", attr_id="extra_negative_attr")
        .drop_nulls()
        .with_columns(boost=pl.lit(20.0))
    )  # the trap of a misinformed request comes first
    # A shared rare attribute (the same director) makes a harder negative than a shared common
    # one (the same decade): each shared attribute weighs 1 / its item count, summed; the false
    # premise's items (weight 20) come first.
    degree = g.attributes.select("attr_id", weight=1.0 / pl.col("item_count").cast(pl.Float64))
    hard = (
        pl.concat([cond_attrs, pos_attrs])
        .unique(["query_id", "attr_id"])
        .join(degree, on="attr_id")
        .with_columns(boost=pl.col("weight"))
        .drop("weight")
    )
    # Sorted before summing: float sums depend on their order.
    hard = (
        pl.concat([hard, false_attrs])
        .join(g.facts.select("item_id", "attr_id"), on="attr_id")
        .sort("query_id", "item_id", "attr_id")
        .group_by("query_id", "item_id")
        .agg(pl.col("boost").sum())
    )
    top_pop = g.popularity.sort("pop", "item_id", descending=[True, False]).head(
        max(200, 10 * cfg.candidates)
    )
    hard = pl.concat(
        [
            hard,
            interest.join(top_pop.select("item_id"), how="cross").select(
                "query_id", "item_id", boost=pl.lit(1.0)
            ),
        ]
    ).with_columns(pl.col("item_id").cast(pl.Int32))
    hard = hard.group_by("query_id", "item_id").agg(pl.col("boost").max())
    hard = hard.join(excluded_df, on=["query_id", "item_id"], how="anti").join(
        g.popularity, on="item_id"
    )
    hard = (
        shuffled(hard, ["query_id", "item_id"], rng)
        .with_columns(
            key=-pl.col("rand").log() / (pl.col("boost") * (pl.col("pop") + 1).cast(pl.Float64))
        )
        .sort("key", "query_id", "item_id")
        .group_by("query_id", maintain_order=True)
        .head(n_hard)
        .select("query_id", "item_id", hard=pl.lit(True))
    )

    # Uniform negatives fill the rest; redraw the few queries that came up short.
    chosen = hard
    for _ in range(8):
        have = chosen.group_by("query_id").len("n")
        need = (
            queries.select("query_id")
            .join(have, on="query_id", how="left")
            .with_columns(pl.col("n").fill_null(0))
            .filter(pl.col("n") < n_neg)
            .sort("query_id")
        )
        if need.height == 0:
            break
        draws = min(g.n_items, 3 * n_neg + 10)
        drawn = pl.DataFrame(
            {
                "query_id": np.repeat(need["query_id"].to_numpy(), draws),
                "item_id": rng.integers(0, g.n_items, need.height * draws).astype(np.int32),
            }
        )
        # Draws keep their order (the joins may not): the first new ones fill the query.
        drawn = (
            drawn.with_row_index("draw")
            .join(excluded_df, on=["query_id", "item_id"], how="anti")
            .join(chosen.select("query_id", "item_id"), on=["query_id", "item_id"], how="anti")
            .join(need, on="query_id")
            .sort("draw")
            .unique(["query_id", "item_id"], keep="first", maintain_order=True)
            .filter(pl.int_range(pl.len()).over("query_id") < n_neg - pl.col("n"))
            .select("query_id", "item_id", hard=pl.lit(False))
        )
        chosen = pl.concat([chosen, drawn])
    counts = chosen.group_by("query_id").len("n")
    short = (
        queries.select("query_id")
        .join(counts, on="query_id", how="left")
        .filter(pl.col("n").fill_null(0) < n_neg)
    )
    if short.height:
        raise UserError(
            f"{g.ref}: query {short['query_id'][0]} has fewer than {n_neg} items that fail its "
            "conditions; lower --candidates or use a larger catalogue"
        )
    full = pl.concat(
        [chosen, pos.select("query_id", item_id="pos_item", hard=pl.lit(None))],
        how="vertical_relaxed",
    )
    full = shuffled(full, ["query_id", "item_id"], rng).sort("query_id", "rand", "item_id")
    return full.group_by("query_id", maintain_order=True).agg(
        candidate_item_ids=pl.col("item_id").cast(pl.Int32),
        positive_index=pl.col("hard").is_null().arg_max().cast(pl.Int32),
        hard_negatives=pl.col("hard").fill_null(False).sum().cast(pl.Int32),
    )
