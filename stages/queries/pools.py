"""Pools of possible queries per family, each row right by construction."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from schemas.queries import CONDITION
from stages.graph.view import GraphView
from stages.queries.config import SPECIFIC, MakeQueriesConfig
from stages.queries.sampling import pick, shuffled
from stages.text.titles import normalise_title, title_year

_COND_FIELDS = {
    "relation": pl.String,
    "value": pl.String,
    "attr_id": pl.Int32,
    "via_item_id": pl.Int32,
    "via_title": pl.String,
    "false_value": pl.String,
    "false_attr_id": pl.Int32,
}


def _cond(
    prefix: str,
    relation: str,
    value: str,
    attr_id: str,
    via: str | None = None,
    via_title: str | None = None,
    false_value: str | None = None,
    false_attr: str | None = None,
) -> list[pl.Expr]:
    """Scalar columns ``{prefix}_relation, ...`` of one condition. Pools stay flat (cheap on
    a million rows); the condition structs are built only for the sampled queries."""
    source = dict(
        relation=relation,
        value=value,
        attr_id=attr_id,
        via_item_id=via,
        via_title=via_title,
        false_value=false_value,
        false_attr_id=false_attr,
    )
    return [
        (pl.col(col).cast(dtype) if col else pl.lit(None, dtype)).alias(f"{prefix}_{field}")
        for (field, dtype), col in zip(_COND_FIELDS.items(), source.values(), strict=True)
    ]


def conditions_column(df: pl.DataFrame) -> pl.DataFrame:
    """Turn the flat ``c1_*`` / ``c2_*`` columns into the ``conditions`` list of structs."""
    for prefix in ("c1", "c2"):
        df = df.with_columns(
            [
                pl.lit(None, dtype).alias(f"{prefix}_{f}")
                for f, dtype in _COND_FIELDS.items()
                if f"{prefix}_{f}" not in df.columns
            ]
        )
    structs = [
        pl.when(pl.col(f"{prefix}_relation").is_not_null()).then(
            pl.struct(**{f: pl.col(f"{prefix}_{f}") for f in _COND_FIELDS})
        )
        for prefix in ("c1", "c2")
    ]
    flat = [f"{p}_{f}" for p in ("c1", "c2") for f in _COND_FIELDS]
    return df.with_columns(
        conditions=pl.concat_list(structs).list.drop_nulls().cast(pl.List(CONDITION))
    ).drop(flat)


def simple_pool(
    g: GraphView, liked: pl.DataFrame, cfg: MakeQueriesConfig, rng: np.random.Generator
) -> pl.DataFrame:
    ua = liked.join(g.facts, on="item_id")
    support = ua.group_by("user_id", "attr_id").len("support")
    ua = ua.join(support, on=["user_id", "attr_id"]).filter(pl.col("support") >= cfg.min_support)
    one = ua.filter(pl.col("relation").is_in(SPECIFIC)).select(
        "user_id", "item_id", *_cond("c1", "relation", "value", "attr_id")
    )
    left = ua.select("user_id", "item_id", "attr_id", "relation", "value")
    pairs = left.join(left, on=["user_id", "item_id"], suffix="_2").filter(
        (pl.col("attr_id") < pl.col("attr_id_2"))
        & (pl.col("relation") != pl.col("relation_2"))
        & ~(pl.col("relation").is_in(SPECIFIC) & pl.col("relation_2").is_in(SPECIFIC))
    )
    # Both conditions together must also be shared by min_support liked items of the user.
    pair_support = pairs.group_by("user_id", "attr_id", "attr_id_2").len("support")
    pairs = pairs.join(pair_support, on=["user_id", "attr_id", "attr_id_2"]).filter(
        pl.col("support") >= cfg.min_support
    )
    # Specific relation first, genre before decade, so texts read naturally. (Swapping plain
    # columns, then building the structs once, is much faster than choosing between lists.)
    order = {r: n for n, r in enumerate((*SPECIFIC, "genre", "decade", "language", "country"))}
    rank = pl.DataFrame({"relation": list(order), "rank": list(order.values())})
    pairs = pairs.join(rank, on="relation", how="left").join(
        rank.rename({"relation": "relation_2", "rank": "rank_2"}), on="relation_2", how="left"
    )
    swap = pl.col("rank").fill_null(99) > pl.col("rank_2").fill_null(99)
    cols = ("relation", "value", "attr_id")
    pairs = pairs.with_columns(
        *[pl.when(swap).then(pl.col(f"{c}_2")).otherwise(pl.col(c)).alias(f"a_{c}") for c in cols],
        *[pl.when(swap).then(pl.col(c)).otherwise(pl.col(f"{c}_2")).alias(f"b_{c}") for c in cols],
    )
    two = pairs.select(
        "user_id",
        "item_id",
        *_cond("c1", "a_relation", "a_value", "a_attr_id"),
        *_cond("c2", "b_relation", "b_value", "b_attr_id"),
    )
    # As many two-condition as one-condition requests (there are far more pairs than singles).
    key = ["user_id", "item_id", "c1_attr_id", "c2_attr_id"]
    two = shuffled(two, key, rng).sort("rand", *key).head(one.height).drop("rand")
    return pl.concat([one, two], how="diagonal").with_columns(
        extra_negative_attr=pl.lit(None, pl.Int32)
    )


def _references(g: GraphView, cfg: MakeQueriesConfig) -> pl.DataFrame:
    """Popular items with exactly one value of a specific relation: ``ref, attr_id, ...``."""
    cutoff = max(1, math.ceil(g.n_items * cfg.popular_share))
    popular = g.popularity.sort("pop", "item_id", descending=[True, False]).head(cutoff)
    single = (
        g.facts.filter(pl.col("relation").is_in(SPECIFIC))
        .join(popular.select("item_id", "pop"), on="item_id")
        .filter(pl.len().over("item_id", "relation") == 1)
    )
    return single.join(g.items.select("item_id", "title", "year"), on="item_id").select(
        ref="item_id",
        ref_pop="pop",
        attr_id="attr_id",
        relation="relation",
        value="value",
        ref_title=title_year(pl.col("title"), pl.col("year")),
    )


def implicit_pool(
    g: GraphView,
    liked: pl.DataFrame,
    cfg: MakeQueriesConfig,
    rng: np.random.Generator,
    *,
    misinformed: bool,
) -> pl.DataFrame:
    refs = _references(g, cfg)
    ua = liked.join(g.facts.filter(pl.col("relation").is_in(SPECIFIC)), on="item_id")
    # The reference is another work: not the positive, nor another edition of it (Book-Crossing
    # lists editions under separate ISBNs).
    keys = g.items.select("item_id", key=normalise_title(pl.col("title")))
    rows = (
        ua.join(refs.select("ref", "ref_pop", "attr_id", "ref_title"), on="attr_id")
        .join(keys, on="item_id")
        .join(keys.rename({"item_id": "ref", "key": "ref_key"}), on="ref")
        .filter((pl.col("ref") != pl.col("item_id")) & (pl.col("key") != pl.col("ref_key")))
    )
    rows = pick(
        rows,
        ["user_id", "item_id", "attr_id"],
        ["user_id", "item_id", "attr_id", "ref"],
        rng,
        weight="ref_pop",
    )
    if not misinformed:
        return rows.select(
            "user_id",
            "item_id",
            *_cond("c1", "relation", "value", "attr_id", "ref", "ref_title"),
            extra_negative_attr=pl.lit(None, pl.Int32),
        )
    # A false value: another well-known value of the same relation, not the reference's and not
    # the positive's (else the answer would be ambiguous).
    famous = (
        g.attributes.filter(pl.col("relation").is_in(SPECIFIC))
        .sort("item_count", "attr_id", descending=[True, False])
        .group_by("relation", maintain_order=True)
        .head(60)
        .select(
            "relation",
            false_attr="attr_id",
            false_value="value",
            slot=pl.int_range(pl.len()).over("relation"),
        )
    )
    # Four random draws per row from the relation's 60 best-known values (the full cross
    # product with all 60 was the slowest step of the stage).
    sizes = famous.group_by("relation").len("n_famous")
    rows = rows.join(sizes, on="relation").sort("user_id", "item_id", "attr_id")
    rows = pl.concat([rows] * 4)
    rows = rows.with_columns(
        slot=(pl.Series(rng.random(rows.height)) * pl.col("n_famous")).floor().cast(pl.Int64)
    )
    options = rows.join(
        famous.with_columns(pl.col("slot").cast(pl.Int64)), on=["relation", "slot"]
    ).filter(pl.col("false_attr") != pl.col("attr_id"))
    has = g.facts.select("item_id", false_attr="attr_id", flag=pl.lit(True))
    options = (
        options.join(
            has.rename({"item_id": "ref", "flag": "ref_has"}), on=["ref", "false_attr"], how="left"
        )
        .join(has.rename({"flag": "pos_has"}), on=["item_id", "false_attr"], how="left")
        .filter(pl.col("ref_has").is_null() & pl.col("pos_has").is_null())
    )
    # Rows equal on this key are the same draw made twice: equal throughout.
    key = ["user_id", "item_id", "attr_id", "ref", "false_attr"]
    options = pick(options, ["user_id", "item_id", "attr_id"], key, rng)
    return options.select(
        "user_id",
        "item_id",
        *_cond(
            "c1", "relation", "value", "attr_id", "ref", "ref_title", "false_value", "false_attr"
        ),
        extra_negative_attr=pl.col("false_attr").cast(pl.Int32),
    )


def interest_windows(liked: pl.DataFrame, history_len: int) -> pl.DataFrame:
    """Every (user, positive at position t) with the ``history_len`` liked items before it;
    ``from_end`` is 0 for the user's last liked item."""
    hist = liked.group_by("user_id", maintain_order=True).agg(seq=pl.col("item_id"), n=pl.len())
    rows = liked.join(hist, on="user_id").filter(pl.col("pos") >= history_len)
    return rows.select(
        "user_id",
        "item_id",
        history=pl.col("seq").list.slice(pl.col("pos") - history_len, history_len),
        from_end=(pl.col("n") - 1 - pl.col("pos")).cast(pl.Int32),
    )
