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
first sorts by a key that identifies the rows (`shuffled`, `pick`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from schemas.queries import FAMILIES, QUERIES, SPLITS
from stages.core.artifact import Artifact, ArtifactWriter, BuildResult
from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.graph.view import GraphView
from stages.queries.candidates import draw_candidates
from stages.queries.checker import check_queries
from stages.queries.config import MakeQueriesConfig
from stages.queries.facts import candidate_attributes, lookup_lists, named_items
from stages.queries.pools import conditions_column, implicit_pool, interest_windows, simple_pool
from stages.queries.sampling import assign_splits
from stages.queries.texts import render_texts
from stages.text.titles import title_year


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
    q = lookup_lists(q, "history_item_ids", titles, "title", "history_titles")
    q = lookup_lists(q, "positive_item_ids", titles, "title", "positive_titles")
    q = lookup_lists(q, "candidate_item_ids", titles, "title", "candidate_titles")
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
