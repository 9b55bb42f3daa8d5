"""The facts a prompt shows per query: each candidate's, and those of the items a request names."""

from __future__ import annotations

import polars as pl

from schemas.queries import ATTRIBUTE, NAMED_ITEM
from stages.graph.view import GraphView, item_attributes, shown_facts


def candidate_attributes(q: pl.DataFrame, g: GraphView) -> pl.DataFrame:
    """``query_id, candidate_attributes``: each candidate's shown facts (in candidate order),
    the query's true condition values first within their relation, so the FACT_VALUES cap
    never hides the value a request asks for. Most candidates show their item's usual facts;
    only the few with a condition value beyond the cap are recomputed."""
    shown = shown_facts(g.facts, ["item_id"])
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
        shown_facts(facts, ["qrow", "pos"], first="wanted")
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


def lookup_lists(
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
