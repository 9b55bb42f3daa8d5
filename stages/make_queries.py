"""`rerec make-queries`: RecBench+-style requests with candidate sets, from the graph.

Recipe (every step a Polars expression or join over whole tables):

1. Liked items: interactions rated at least the like threshold, in time order per user.
2. Pools of possible queries per family, each row a (user, positive, conditions) that is right
   by construction:
   - simple: 1 specific condition (director, cast, ...) or 2 conditions, each attribute shared
     by at least `min_support` of the user's liked items, the positive being one of them;
   - medium: a specific condition stated through a popular reference item that has exactly one
     value of that relation ("directed by the director of Jaws"), optionally with a broad one;
   - hard: the same, but the request credits the reference with a false value of the relation;
     the truth follows the real value, the positive does not carry the false one;
   - interest: the user's `history_len` liked items in time order, the positive the next one.
3. Sampling per family and split: test first, then valid, then train; train never contains a
   (user, positive) of valid or test; optionally users are disjoint across splits.
4. Candidates: the positive plus negatives that each fail at least one true condition (for
   interest: items the user never interacted with); a share are hard negatives (partial matches,
   the false premise's items, popular items), the rest uniform; order shuffled.
5. Text from paraphrase templates chosen by seed, with the structured conditions stored beside.

`check_queries` recomputes every guarantee from the graph.

Determinism: the output is a function of the graph's tables, the config and the seed alone, on
any thread count. Polars does not promise the row order of joins, group-bys or `unique`, so
every step that deals random numbers by row position, keeps "the first" row or sums floats
first sorts by a key that identifies the rows (`_shuffled`, `_pick`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from schemas import check_name
from schemas.queries import (
    ATTRIBUTE,
    CONDITION,
    FACT_RELATIONS,
    FACT_VALUES,
    FAMILIES,
    NAMED_ITEM,
    QUERIES,
    SPLITS,
)
from stages.config import StageConfig
from stages.errors import UserError
from stages.film_facts import normalise_title
from stages.queries_reader import NOUN
from stages.store import Artifact, ArtifactStore, ArtifactWriter, BuildResult

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


# ------------------------------------------------------------------ graph views
class GraphView:
    """The graph tables the generator and the checker need, read once."""

    def __init__(self, graph: Artifact):
        self.ref = graph.ref
        self.items = graph.read("items").select("item_id", "title", "year", "domain")
        self.attributes = graph.read("attributes")
        self.item_attributes = graph.read("item_attributes")
        self.interactions = graph.read("interactions")
        self.domain = self.items["domain"][0] if self.items.height else "items"
        self.n_items = self.items.height
        # Both sorted: a join's or group-by's row order is not promised.
        self.facts = (
            self.item_attributes.join(self.attributes, on="attr_id")
            .select("item_id", "attr_id", "relation", "value")
            .sort("item_id", "attr_id")
        )
        self.popularity = (
            self.interactions.group_by("item_id")
            .len("pop")
            .join(self.items.select("item_id"), on="item_id", how="right")
            .with_columns(pl.col("pop").fill_null(0))
            .sort("item_id")
        )

    def liked(self, threshold: float | None) -> pl.DataFrame:
        """``user_id, item_id, pos`` (0-based time order of the user's liked items)."""
        inter = self.interactions.with_row_index("row")
        if threshold is None:
            top = inter["rating"].max()
            threshold = 7.0 if top is not None and top > 5 else 4.0
        liked = inter.filter(pl.col("rating").is_null() | (pl.col("rating") >= threshold))
        return (
            liked.unique(["user_id", "item_id"], keep="first", maintain_order=True)
            .sort("user_id", pl.col("timestamp").fill_null(0), "row")
            .with_columns(pos=pl.int_range(pl.len()).over("user_id").cast(pl.Int32))
            .select("user_id", "item_id", "pos")
        )


def _shuffled(df: pl.DataFrame, key: list[str], rng: np.random.Generator) -> pl.DataFrame:
    """``df`` sorted by ``key`` (columns that tell its rows apart; rows equal on them must be
    equal throughout) with a uniform ``rand`` column. Random numbers are dealt by row position,
    and joins, group-bys and `unique` leave the row order to polars' threads: sorting first
    makes the draw a function of the table's content and the seed only."""
    df = df.sort(key)
    return df.with_columns(rand=pl.Series(rng.random(df.height)))


def _pick(
    df: pl.DataFrame,
    by: list[str],
    key: list[str],
    rng: np.random.Generator,
    weight: str | None = None,
) -> pl.DataFrame:
    """One row per ``by`` group, uniformly (or proportionally to ``weight``) at random;
    ``key`` tells the rows apart (see `_shuffled`). The result is sorted by ``key``."""
    df = _shuffled(df, key, rng).with_columns(rand=-pl.col("rand").log())
    if weight is not None:
        df = df.with_columns(rand=pl.col("rand") / pl.col(weight).cast(pl.Float64).clip(1e-9))
    picked = df.sort("rand", *key).unique(by, keep="first", maintain_order=True)
    return picked.drop("rand").sort(key)


# ------------------------------------------------------------------ pools
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
    two = _shuffled(two, key, rng).sort("rand", *key).head(one.height).drop("rand")
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
    rows = _pick(
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
    options = _pick(options, ["user_id", "item_id", "attr_id"], key, rng)
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
                rows = _pick(rows, ["user_id"], ["user_id", "item_id"], rng)  # one per user
            if rows.height < want:
                raise UserError(
                    f"only {rows.height} {family} queries can be made for the {split} split "
                    f"(asked for {want}); lower --{split}-size, or use a larger graph"
                )
            key = _pool_key(rows)
            picked = _shuffled(rows, key, rng).sort("rand", *key).head(want)
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
        _shuffled(hard, ["query_id", "item_id"], rng)
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
    full = _shuffled(full, ["query_id", "item_id"], rng).sort("query_id", "rand", "item_id")
    return full.group_by("query_id", maintain_order=True).agg(
        candidate_item_ids=pl.col("item_id").cast(pl.Int32),
        positive_index=pl.col("hard").is_null().arg_max().cast(pl.Int32),
        hard_negatives=pl.col("hard").fill_null(False).sum().cast(pl.Int32),
    )


# ------------------------------------------------------------------ text
_ARTICLE = r"The|A|An|Les|La|Le|L'|Il|El|Lo|Los|Las|Das|Die|Der|Den|Det|De|Un|Une"


def display_title(title: pl.Expr) -> pl.Expr:
    """'Usual Suspects, The' -> 'The Usual Suspects' (MovieLens moves articles to the end);
    an alternate title in parentheses stays where it is."""
    moved = title.str.replace(rf"^(.*?), ({_ARTICLE})(\s+\(.*\))?$", "$2 $1$3")
    return moved.str.replace(r"^(L') ", "$1")


def title_year(title: pl.Expr, year: pl.Expr) -> pl.Expr:
    title = display_title(title)
    return (
        pl.when(year.is_null())
        .then(title)
        .otherwise(pl.format("{} ({})", title, year.cast(pl.String)))
    )


def _with_article(phrase: pl.Expr) -> pl.Expr:
    return (
        pl.when(phrase.str.contains(r"^[aeiouAEIOU]"))
        .then(pl.format("an {}", phrase))
        .otherwise(pl.format("a {}", phrase))
    )


_DIRECT = {  # relation -> paraphrases of "has value v"
    "director": ("directed by {}", "by director {}"),
    "writer": ("written by {}", "from a screenplay by {}"),
    "cast": ("starring {}", "featuring {}"),
    "language": ("in {}", "with dialogue in {}"),
    "country": ("made in {}", "produced in {}"),
    "decade": ("from the {}", "released in the {}"),
    "author": ("by {}", "written by {}"),
    "publisher": ("published by {}", "from the publisher {}"),
}
_VIA = {  # relation -> paraphrases of "has the value item x has"
    "director": ("directed by the director of {}", "by whoever directed {}"),
    "writer": ("written by the writer of {}", "by the screenwriter of {}"),
    "cast": ("starring the star of {}", "with the lead of {}"),
    "author": ("by the author of {}", "written by whoever wrote {}"),
    "publisher": ("from the publisher of {}", "published by the house that published {}"),
}
_SAME = {
    "director": "by the same director",
    "writer": "by the same writer",
    "cast": "with the same star",
    "author": "by the same author",
    "publisher": "from the same publisher",
}
_REQUEST = (  # {anp}: the noun phrase with its article ("an action film")
    "Can you recommend {anp} {c}?",
    "I'm looking for {anp} {c}. Any suggestions?",
    "Suggest {anp} {c}, please.",
    "What {np} {c} should I {verb} next?",
)
_HARD = (
    "I loved {ref}, the {noun} {false}. Can you recommend another {noun} {same}?",
    "{ref} ({false}) is one of my favourites. Which other {noun} {same} would you suggest?",
    "After {ref}, which was {false}, I want another {noun} {same}. What do you recommend?",
)
_INTEREST = (
    "I recently enjoyed {h}, in that order. What should I {verb} next?",
    "These are the last {noun}s I liked, oldest first: {h}. Recommend what comes next for me.",
    "My recent favourites were {h}. Which {noun} would you suggest now?",
)


def _phrase(
    table: dict[str, tuple[str, ...]], relation: pl.Expr, value: pl.Expr, variant: pl.Expr
) -> pl.Expr:
    expr = pl.lit(None, pl.String)
    for rel, forms in table.items():
        for n, form in enumerate(forms):
            expr = (
                pl.when((relation == rel) & (variant % len(forms) == n))
                .then(pl.format(form, value))
                .otherwise(expr)
            )
    return expr


def _with_the(relation: pl.Expr, value: pl.Expr) -> pl.Expr:
    """'made in the United States', 'in the Netherlands'."""
    needs = (relation == "country") & value.str.contains(
        r"^(United |Netherlands$|Czech Republic$|Soviet Union$|Philippines$|Bahamas$)"
    )
    return pl.when(needs).then(pl.format("the {}", value)).otherwise(value)


def render_texts(q: pl.DataFrame, domain: str, rng: np.random.Generator) -> pl.DataFrame:
    """Adds ``text`` and ``template`` from the structured conditions."""
    noun, verb = NOUN.get(domain, ("item", "try"))
    q = q.with_columns(variant=pl.Series(rng.integers(0, 1 << 30, q.height)))
    conds = (
        q.select("query_id", "variant", "conditions")
        .explode("conditions")
        .drop_nulls("conditions")
        .unnest("conditions")
    )
    conds = conds.with_columns(
        phrase=pl.when(pl.col("relation") == "genre")
        .then(None)
        .when(pl.col("via_item_id").is_not_null())
        .then(_phrase(_VIA, pl.col("relation"), pl.col("via_title"), pl.col("variant") // 7))
        .otherwise(
            _phrase(
                _DIRECT,
                pl.col("relation"),
                _with_the(pl.col("relation"), pl.col("value")),
                pl.col("variant") // 7,
            )
        ),
        false_phrase=_phrase(
            _DIRECT, pl.col("relation"), pl.col("false_value"), pl.col("variant") // 7
        ),
        same=pl.col("relation").replace_strict(_SAME, default=None),
    )
    agg = conds.group_by("query_id").agg(
        genre=pl.col("value").filter(pl.col("relation") == "genre").first(),
        c=pl.col("phrase").drop_nulls().str.join(" and "),
        ref=pl.col("via_title").first(),
        false=pl.col("false_phrase").first(),
        same=pl.col("same").first(),
    )
    q = q.join(agg, on="query_id", how="left")
    np_expr = (
        pl.when(pl.col("genre").is_not_null())
        .then(pl.format("{} {}", pl.col("genre").str.to_lowercase(), pl.lit(noun)))
        .otherwise(pl.lit(noun))
    )
    v = pl.col("variant")
    text = pl.lit(None, pl.String)
    template = pl.lit(None, pl.String)
    for n, form in enumerate(_REQUEST):
        hit = pl.col("family").is_in(["simple", "medium"]) & (v % len(_REQUEST) == n)
        phrase = _with_article(np_expr) if "{anp}" in form else np_expr
        body = (
            form.replace("{anp}", "{}")
            .replace("{np}", "{}")
            .replace("{c}", "{}")
            .replace("{verb}", verb)
        )
        text = pl.when(hit).then(pl.format(body, phrase, pl.col("c"))).otherwise(text)
        template = pl.when(hit).then(pl.lit(f"request-{n}")).otherwise(template)
    for n, form in enumerate(_HARD):
        hit = (pl.col("family") == "hard") & (v % len(_HARD) == n)
        body = (
            form.replace("{noun}", noun)
            .replace("{ref}", "{}")
            .replace("{false}", "{}")
            .replace("{same}", "{}")
        )
        args = []
        for key in ("ref", "false", "same"):
            idx = form.index("{" + key + "}")
            args.append((idx, pl.col(key)))
        args = [a for _, a in sorted(args, key=lambda t: t[0])]
        text = pl.when(hit).then(pl.format(body, *args)).otherwise(text)
        template = pl.when(hit).then(pl.lit(f"misinformed-{n}")).otherwise(template)
    history = pl.col("history_titles")
    joined = (
        pl.when(history.list.len() > 1)
        .then(
            pl.format(
                "{} and {}",
                history.list.slice(0, history.list.len() - 1).list.join(", "),
                history.list.last(),
            )
        )
        .otherwise(history.list.first())
    )
    for n, form in enumerate(_INTEREST):
        hit = (pl.col("family") == "interest") & (v % len(_INTEREST) == n)
        body = form.replace("{noun}", noun).replace("{verb}", verb).replace("{h}", "{}")
        text = pl.when(hit).then(pl.format(body, joined)).otherwise(text)
        template = pl.when(hit).then(pl.lit(f"interest-{n}")).otherwise(template)
    # Whitespace from an empty condition list (a genre-only request) is tidied away.
    text = text.str.replace_all(r"\s+([?.,])", "$1").str.replace_all(r"\s{2,}", " ")
    return q.with_columns(text=text, template=template).drop(
        "variant", "genre", "c", "ref", "false", "same"
    )


def _shown_facts(facts: pl.DataFrame, by: list[str], first: str | None = None) -> pl.DataFrame:
    """The facts a prompt shows, one row each, in display order: ``facts`` (``by`` columns,
    ``item_id``, ``attr_id``, ``relation``, ``value``) grouped by ``by`` and relation (in
    FACT_RELATIONS order, others after them by name), each relation's values by attribute id
    (the most common first), at most FACT_VALUES of them: those where the boolean column
    ``first`` is true are kept before the others."""
    order = {r: n for n, r in enumerate(FACT_RELATIONS)}
    df = facts.with_columns(o=pl.col("relation").replace_strict(order, default=99))
    display = [*by, "o", "relation", "attr_id"]
    if first is not None:
        df = df.sort(
            [*by, "o", "relation", pl.col(first).fill_null(False), "attr_id"],
            descending=[False] * (len(by) + 2) + [True, False],
        )
    else:
        df = df.sort(display)
    df = df.filter(pl.int_range(pl.len()).over([*by, "relation"]) < FACT_VALUES)
    return df.sort(display) if first is not None else df


def item_attributes(g: GraphView, shown: pl.DataFrame | None = None) -> pl.DataFrame:
    """``item_id, attributes``: every item's shown facts as (relation, value) structs
    (``shown``: `_shown_facts` of the graph's facts, when already computed)."""
    if shown is None:
        shown = _shown_facts(g.facts, ["item_id"])
    per_item = shown.group_by("item_id", maintain_order=True).agg(
        attributes=pl.struct("relation", "value")
    )
    return (
        g.items.select("item_id")
        .join(per_item, on="item_id", how="left")
        .sort("item_id")
        .with_columns(pl.col("attributes").fill_null([]).cast(pl.List(ATTRIBUTE)))
    )


def candidate_attributes(q: pl.DataFrame, g: GraphView) -> pl.DataFrame:
    """``query_id, candidate_attributes``: each candidate's shown facts (in candidate order),
    the query's true condition values first within their relation, so the FACT_VALUES cap
    never hides the value a request asks for. Most candidates show their item's usual facts;
    only the few with a condition value beyond the cap are recomputed."""
    shown = _shown_facts(g.facts, ["item_id"])
    long = (
        q.select("candidate_item_ids")
        .with_row_index("qrow")
        .explode("candidate_item_ids")
        .with_columns(pos=pl.int_range(pl.len()).over("qrow"))
        .rename({"candidate_item_ids": "item_id"})
    )
    wanted = (
        q.select("conditions")
        .with_row_index("qrow")
        .explode("conditions")
        .drop_nulls("conditions")
        .select("qrow", attr_id=pl.col("conditions").struct.field("attr_id"), wanted=pl.lit(True))
        .unique()
    )
    hidden = g.facts.select("item_id", "attr_id").join(
        shown.select("item_id", "attr_id"), on=["item_id", "attr_id"], how="anti"
    )
    patch = (
        long.join(wanted.select("qrow", "attr_id"), on="qrow")
        .join(hidden, on=["item_id", "attr_id"], how="semi")
        .select("qrow", "pos", "item_id")
        .unique()
    )
    facts = patch.join(g.facts, on="item_id").join(wanted, on=["qrow", "attr_id"], how="left")
    patched = (
        _shown_facts(facts, ["qrow", "pos"], first="wanted")
        .group_by("qrow", "pos", maintain_order=True)
        .agg(patched=pl.struct("relation", "value"))
        .with_columns(pl.col("patched").cast(pl.List(ATTRIBUTE)))
    )
    per_cand = (
        long.join(item_attributes(g, shown), on="item_id", how="left")
        .join(patched, on=["qrow", "pos"], how="left")
        .sort("qrow", "pos")
        .select(
            "qrow",
            attributes=pl.coalesce("patched", "attributes").fill_null([]),
        )
    )
    lists = per_cand.group_by("qrow", maintain_order=True).agg(candidate_attributes="attributes")
    return (
        q.select("query_id")
        .with_row_index("qrow")
        .join(lists, on="qrow", how="left")
        .sort("qrow")
        .select(
            "query_id",
            pl.col("candidate_attributes").fill_null([]).cast(pl.List(pl.List(ATTRIBUTE))),
        )
    )


def named_items(q: pl.DataFrame, g: GraphView, titles: pl.DataFrame) -> pl.DataFrame:
    """``query_id, named_items``: the items a request names, with their (true) facts: the
    reference item of a medium or misinformed request, the liked items of an interest one."""
    via = pl.col("conditions").list.eval(pl.element().struct.field("via_item_id")).list.drop_nulls()
    ids = q.select(
        "query_id",
        named=pl.when(pl.col("family") == "interest")
        .then(pl.col("history_item_ids"))
        .otherwise(via.list.unique(maintain_order=True))
        .cast(pl.List(pl.Int32)),
    )
    long = (
        ids.with_row_index("qrow")
        .explode("named")
        .with_columns(pos=pl.int_range(pl.len()).over("qrow"))
        .drop_nulls("named")
        .rename({"named": "item_id"})
        .join(titles, on="item_id", how="left")
        .join(item_attributes(g), on="item_id", how="left")
        .sort("qrow", "pos")
    )
    lists = long.group_by("qrow", maintain_order=True).agg(
        named_items=pl.struct(
            "item_id", pl.col("title").fill_null(""), pl.col("attributes").fill_null([])
        )
    )
    return (
        ids.select("query_id")
        .with_row_index("qrow")
        .join(lists, on="qrow", how="left")
        .sort("qrow")
        .select("query_id", pl.col("named_items").fill_null([]).cast(pl.List(NAMED_ITEM)))
    )


def _lookup_lists(
    q: pl.DataFrame, list_col: str, table: pl.DataFrame, value: str, out: str
) -> pl.DataFrame:
    """Map a list of item ids to a list of ``value`` (order kept)."""
    long = (
        q.select("query_id", pl.col(list_col))
        .with_row_index("qrow")
        .explode(list_col)
        .with_row_index("pos")
    )
    mapped = long.join(table, left_on=list_col, right_on="item_id", how="left").sort("pos")
    agg = mapped.group_by("qrow", maintain_order=True).agg(pl.col(value).fill_null("").alias(out))
    return (
        q.with_row_index("qrow")
        .join(agg, on="qrow", how="left")
        .drop("qrow")
        .with_columns(pl.col(out).fill_null([]))
    )


# ------------------------------------------------------------------ the stage
def generate(
    g: GraphView, cfg: MakeQueriesConfig, progress: Callable[[str], None] | None = None
) -> pl.DataFrame:
    rng = np.random.default_rng(cfg.seed)
    say = progress or (lambda _msg: None)
    liked = g.liked(cfg.like_threshold)
    if liked.height == 0:
        raise UserError(f"{g.ref} has no liked interactions to build queries from")
    pools: dict[str, pl.DataFrame] = {}
    for family in cfg.families:
        say(f"pool of {family} queries")
        if family == "simple":
            pool = simple_pool(g, liked, cfg, rng)
        elif family in ("medium", "hard"):
            pool = implicit_pool(g, liked, cfg, rng, misinformed=family == "hard")
        else:
            pool = interest_windows(liked, cfg.history_len).with_columns(
                extra_negative_attr=pl.lit(None, pl.Int32),
            )
        pools[family] = pool
    say("sampling splits")
    users = liked["user_id"].unique().sort()
    q = conditions_column(assign_splits(pools, cfg, rng, users))
    fam_code = {f: f[0] for f in FAMILIES}
    q = q.with_columns(pl.col("user_id").cast(pl.Int32), pl.col("item_id").cast(pl.Int32))
    q = (
        q.with_row_index("n")
        .with_columns(
            query_id=pl.format(
                "{}-{}-{}",
                pl.col("split"),
                pl.col("family").replace_strict(fam_code),
                pl.col("n").cast(pl.String).str.zfill(6),
            )
        )
        .drop("n")
    )
    # User history: interest queries show their window; others keep the user's last liked
    # items other than the positive, for prompts that show history.
    last = liked.join(q.select("query_id", "user_id", "item_id"), on="user_id", suffix="_q")
    last = last.filter(pl.col("item_id") != pl.col("item_id_q")).sort("query_id", "pos")
    last = last.group_by("query_id").agg(recent=pl.col("item_id").tail(cfg.history_len))
    q = q.join(last, on="query_id", how="left").sort("query_id")
    if "history" not in q.columns:
        q = q.with_columns(history=pl.lit(None, pl.List(pl.Int32)))
    q = q.with_columns(
        history_item_ids=pl.when(pl.col("family") == "interest")
        .then(pl.col("history"))
        .otherwise(pl.col("recent").fill_null([]))
        .cast(pl.List(pl.Int32))
    )
    say("drawing candidates")
    cands = draw_candidates(q, g, cfg, rng)
    q = q.join(cands, on="query_id")
    titles = g.items.select("item_id", title=title_year(pl.col("title"), pl.col("year")))
    q = q.with_columns(positive_item_ids=pl.concat_list(pl.col("item_id")))
    q = _lookup_lists(q, "history_item_ids", titles, "title", "history_titles")
    q = _lookup_lists(q, "positive_item_ids", titles, "title", "positive_titles")
    q = _lookup_lists(q, "candidate_item_ids", titles, "title", "candidate_titles")
    say("collecting facts")
    q = q.join(candidate_attributes(q, g), on="query_id").join(
        named_items(q, g, titles), on="query_id"
    )
    say("writing texts")
    q = render_texts(q.sort("query_id"), g.domain, rng).with_columns(domain=pl.lit(g.domain))
    split_order = {s: n for n, s in enumerate(SPLITS)}
    fam_order = {f: n for n, f in enumerate(FAMILIES)}
    q = q.sort(
        pl.col("split").replace_strict(split_order),
        pl.col("family").replace_strict(fam_order),
        "query_id",
    )
    return q.select(list(QUERIES.columns))


# ------------------------------------------------------------------ the checker
def check_queries(
    q: pl.DataFrame, g: GraphView, like_threshold: float | None = None
) -> dict[str, int]:
    """Recompute every guarantee from the graph; returns counts of violations (all zero when
    the queries are right) and of what was checked."""
    problems: dict[str, int] = {}
    cands = (
        q.select(
            "query_id",
            "family",
            "user_id",
            "candidate_item_ids",
            "positive_item_ids",
            "positive_index",
        )
        .explode("candidate_item_ids")
        .rename({"candidate_item_ids": "item_id"})
    )
    cands = cands.with_columns(is_pos=pl.col("item_id").is_in(pl.col("positive_item_ids")))
    per_q = cands.group_by("query_id").agg(
        n_pos=pl.col("is_pos").sum(), n=pl.len(), distinct=pl.col("item_id").n_unique()
    )
    problems["queries_without_exactly_one_positive"] = per_q.filter(pl.col("n_pos") != 1).height
    problems["queries_with_repeated_candidates"] = per_q.filter(
        pl.col("distinct") != pl.col("n")
    ).height
    idx = q.select(
        "query_id",
        at=pl.col("candidate_item_ids").list.get(pl.col("positive_index"), null_on_oob=True),
        want=pl.col("positive_item_ids").list.first(),
    )
    problems["wrong_positive_index"] = idx.filter(pl.col("at") != pl.col("want")).height
    sat = satisfying_pairs(q, g.facts).with_columns(sat=pl.lit(True))
    has_conds = q.filter(pl.col("conditions").list.len() > 0).select("query_id")
    judged = (
        cands.join(has_conds, on="query_id", how="semi")
        .join(sat, on=["query_id", "item_id"], how="left")
        .with_columns(pl.col("sat").fill_null(False))
    )
    problems["positives_failing_a_condition"] = judged.filter(
        pl.col("is_pos") & ~pl.col("sat")
    ).height
    problems["negatives_satisfying_all_conditions"] = judged.filter(
        ~pl.col("is_pos") & pl.col("sat")
    ).height
    conds = (
        q.select("query_id", "conditions")
        .explode("conditions")
        .drop_nulls("conditions")
        .unnest("conditions")
    )
    # The positive's facts in the prompt show every value the request asks for (the cap of
    # FACT_VALUES values per relation keeps condition values first).
    shown = (
        q.select(
            "query_id",
            attrs=pl.col("candidate_attributes").list.get(
                pl.col("positive_index"), null_on_oob=True
            ),
        )
        .explode("attrs")
        .drop_nulls("attrs")
        .unnest("attrs")
    )
    problems["positives_not_showing_a_condition_value"] = conds.join(
        shown, on=["query_id", "relation", "value"], how="anti"
    ).height
    facts = g.facts.select("item_id", "attr_id", "relation", "value").with_columns(ok=pl.lit(True))
    via = conds.filter(pl.col("via_item_id").is_not_null())
    via_ok = via.join(
        facts.select(via_item_id="item_id", attr_id="attr_id", ok="ok"),
        on=["via_item_id", "attr_id"],
        how="left",
    )
    problems["reference_items_lacking_the_fact"] = via_ok.filter(pl.col("ok").is_null()).height
    false = conds.filter(pl.col("false_attr_id").is_not_null())
    false_ok = false.join(
        facts.select(via_item_id="item_id", false_attr_id="attr_id", ok="ok"),
        on=["via_item_id", "false_attr_id"],
        how="left",
    )
    problems["false_premises_that_are_true"] = false_ok.filter(pl.col("ok").is_not_null()).height
    named = conds.join(
        g.attributes.select("attr_id", rel="relation", val="value"), on="attr_id", how="left"
    )
    problems["conditions_not_in_graph"] = named.filter(
        (pl.col("rel") != pl.col("relation"))
        | (pl.col("val") != pl.col("value"))
        | pl.col("rel").is_null()
    ).height
    problems["candidates_that_are_reference_items"] = cands.join(
        via.select("query_id", item_id="via_item_id"), on=["query_id", "item_id"], how="semi"
    ).height
    interest = q.filter(pl.col("family") == "interest")
    if interest.height:
        seen = g.interactions.select("user_id", "item_id").unique().with_columns(seen=pl.lit(True))
        neg = cands.filter((pl.col("family") == "interest") & ~pl.col("is_pos"))
        problems["interest_negatives_the_user_interacted_with"] = neg.join(
            seen, on=["user_id", "item_id"], how="semi"
        ).height
        liked = g.liked(like_threshold)
        seqs = liked.group_by("user_id").agg(seq=pl.col("item_id").sort_by("pos"))
        win = (
            interest.select(
                "query_id",
                "user_id",
                "history_item_ids",
                item_id=pl.col("positive_item_ids").list.first(),
            )
            .join(liked, on=["user_id", "item_id"], how="left")
            .join(seqs, on="user_id", how="left")
        )
        n_hist = pl.col("history_item_ids").list.len()
        win = win.with_columns(expected=pl.col("seq").list.slice(pl.col("pos") - n_hist, n_hist))
        # The positive is a liked item and the history is exactly the liked items before it.
        problems["interest_positives_not_next_in_time"] = win.filter(
            pl.col("pos").is_null()
            | (pl.col("pos") < n_hist)
            | (pl.col("expected") != pl.col("history_item_ids"))
        ).height
    leaks = (
        q.filter(pl.col("split") == "train")
        .select("user_id", item=pl.col("positive_item_ids").list.first())
        .join(
            q.filter(pl.col("split") != "train").select(
                "user_id", item=pl.col("positive_item_ids").list.first()
            ),
            on=["user_id", "item"],
            how="semi",
        )
    )
    problems["train_queries_leaking_a_test_or_valid_pair"] = leaks.height
    return problems


def make_queries(
    store: ArtifactStore,
    cfg: MakeQueriesConfig,
    *,
    force: bool = False,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    graph = store.resolve(cfg.graph, kind="graph")

    def build(writer: ArtifactWriter) -> None:
        g = GraphView(graph)
        if g.interactions.height == 0:
            raise UserError(f"{graph.ref} has no interactions to build queries from")
        q = generate(g, cfg, progress)
        problems = check_queries(q, g, like_threshold=cfg.like_threshold)
        bad = {k: v for k, v in problems.items() if v}
        if bad:  # a generator bug, never a user error
            raise RuntimeError(f"generated queries failed their checks: {bad}")
        writer.write_table("queries", q)
        counts = q.group_by("family", "split").len().sort("family", "split")
        writer.metrics.update(
            counts={f"{r['family']}/{r['split']}": r["len"] for r in counts.iter_rows(named=True)},
            total=q.height,
            domain=g.domain,
            checks=problems,
            mean_hard_negatives=round(float(q["hard_negatives"].mean() or 0), 3),
        )

    return store.build(
        cfg.artifact_name(graph.name),
        config=cfg,
        inputs=[graph],
        build=build,
        force=force,
        command=command,
    )


def check_artifact(store: ArtifactStore, ref: str) -> tuple[Artifact, dict[str, int]]:
    """Re-run the checker on a stored `queries` artifact against the graph it was built from."""
    art = store.resolve(ref, kind="queries")
    graph = store.input_of(art, "graph")
    cfg = art.manifest.config
    return art, check_queries(
        art.read("queries"), GraphView(graph), like_threshold=cfg.get("like_threshold")
    )


def example_rows(q: pl.DataFrame) -> list[dict[str, Any]]:
    """One test query per family, for display."""
    return (
        q.filter(pl.col("split") == "test")
        .group_by("family", maintain_order=True)
        .head(1)
        .to_dicts()
    )
