"""The `queries` artifact: RecBench+-style recommendation requests with candidate sets.

One row per query. `conditions` holds the structured truth behind the text: each condition is
an attribute (relation, value) the answer must have, stated directly or through another item
(`via_item_id`), and, for a misinformed request, the false value the text credits that item with.
Everything the prompt renderer needs (titles, years, facts) is stored, so training, evaluation
and the assistant render prompts from this artifact alone. Facts are stored structured, as
(relation, value) pairs, so the renderer chooses which to show (`--candidate-facts compact`
shows only the relations a request names): per candidate, and for the items a request names
(`named_items`: the reference item of a medium or misinformed request, with its true facts,
and the liked items of an interest request).
"""

from __future__ import annotations

import polars as pl

from schemas.base import ArtifactSchema, TableSchema

FAMILIES = ("simple", "medium", "hard", "interest")
# The relations of facts, in the order prompts show them, and the values shown per relation.
FACT_RELATIONS = (
    "genre",
    "director",
    "writer",
    "cast",
    "author",
    "publisher",
    "decade",
    "language",
    "country",
)
FACT_VALUES = 3
SPLITS = ("train", "valid", "test")

CONDITION = pl.Struct(
    {
        "relation": pl.String,
        "value": pl.String,
        "attr_id": pl.Int32,
        "via_item_id": pl.Int32,  # null: stated directly; else "the <relation> of <item>"
        "via_title": pl.String,
        "false_value": pl.String,  # misinformed: what the request wrongly credits via_item with
        "false_attr_id": pl.Int32,
    }
)

# One fact of an item. An item's facts are grouped by relation (in FACT_RELATIONS order, others
# after them by name), at most FACT_VALUES values each; a request's condition values come first
# within their relation, so the cap never hides the value the request asks for.
ATTRIBUTE = pl.Struct({"relation": pl.String, "value": pl.String})

NAMED_ITEM = pl.Struct({"item_id": pl.Int32, "title": pl.String, "attributes": pl.List(ATTRIBUTE)})

QUERIES = TableSchema(
    "queries",
    {
        "query_id": pl.String,
        "domain": pl.String,  # movies | books | ...
        "family": pl.String,  # simple | medium | hard | interest
        "split": pl.String,  # train | valid | test
        "user_id": pl.Int32,
        "template": pl.String,  # which paraphrase produced the text
        "text": pl.String,
        "conditions": pl.List(CONDITION),  # empty for interest queries
        "history_item_ids": pl.List(pl.Int32),  # interest: liked items in order, oldest first
        "history_titles": pl.List(pl.String),
        "positive_item_ids": pl.List(pl.Int32),
        "positive_titles": pl.List(pl.String),
        "candidate_item_ids": pl.List(pl.Int32),  # shuffled; exactly one positive
        "candidate_titles": pl.List(pl.String),  # "Title (Year)"
        "candidate_attributes": pl.List(pl.List(ATTRIBUTE)),  # per candidate, see ATTRIBUTE
        # Items the request names: medium/hard: the reference item (its true facts);
        # interest: the liked items, oldest first; simple: none.
        "named_items": pl.List(NAMED_ITEM),
        "positive_index": pl.Int32,  # 0-based position of the positive among the candidates
        "hard_negatives": pl.Int32,  # how many negatives were drawn as hard ones
    },
    "one row per request",
)

QUERIES_ARTIFACT = ArtifactSchema(
    name="queries",
    # 2: candidates drawn independently of row order (1 named other content)
    # 3: structured facts (candidate_attributes, named_items) replace the candidate_facts strings
    version=3,
    kind="queries",
    description="RecBench+-style query splits (simple, medium, hard, interest) with candidates",
    produced_by="rerec make-queries --force",
    tables={"queries": QUERIES},
    variants=True,
)
