"""`check_queries`: every guarantee of a query split recomputed from the graph."""

from __future__ import annotations

import polars as pl

from stages.graph.view import GraphView
from stages.queries.candidates import satisfying_pairs


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
