"""The graph's tables as the query generator, the checker and the assistant read them, and
the facts a prompt shows of an item."""

from __future__ import annotations

import polars as pl

from schemas.queries import ATTRIBUTE, FACT_RELATIONS, FACT_VALUES
from stages.core.artifact import Artifact


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


def shown_facts(facts: pl.DataFrame, by: list[str], first: str | None = None) -> pl.DataFrame:
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
    (``shown``: `shown_facts` of the graph's facts, when already computed)."""
    if shown is None:
        shown = shown_facts(g.facts, ["item_id"])
    per_item = shown.group_by("item_id", maintain_order=True).agg(
        attributes=pl.struct("relation", "value")
    )
    return (
        g.items.select("item_id")
        .join(per_item, on="item_id", how="left")
        .sort("item_id")
        .with_columns(pl.col("attributes").fill_null([]).cast(pl.List(ATTRIBUTE)))
    )
