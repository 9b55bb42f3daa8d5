"""`rerec make-queries`: correct by construction (checked against the raw toy data, not the
generator's own tables), deterministic, leak-free, with clear errors; the prompt renderer."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.graph.view import GraphView
from stages.llm.prompts import render_messages, render_user_message
from stages.queries.checker import check_queries
from stages.queries.config import MakeQueriesConfig
from stages.queries.stage import make_queries
from tests.fixtures.graphs import build_toy_graph, toy_catalogue

SMALL = dict(train_size=12, valid_size=3, test_size=5, candidates=6)


@pytest.fixture
def toy(store: ArtifactStore, tmp_path: Path) -> dict:
    data = toy_catalogue()
    build_toy_graph(store, tmp_path, data)
    return data


def _truth(data: dict):
    films = data["films"]

    def value(film: str, relation: str) -> str:
        f = films[film]
        if relation == "decade":
            return f"{f['year'] // 10 * 10}s"
        return f[relation]

    return films, value


def test_every_query_is_right_against_the_raw_data(store, toy) -> None:
    art = make_queries(store, MakeQueriesConfig(**SMALL)).artifact
    q = art.read("queries")
    items = store.resolve("graph").read("items").select("item_id", "source_id")
    src = dict(items.iter_rows())
    users = dict(store.resolve("graph").read("users").select("user_id", "source_id").iter_rows())
    films, value = _truth(toy)
    liked = {}
    for u, i, r, _ in sorted(toy["ratings"], key=lambda x: x[3]):
        if r >= 4:
            liked.setdefault(u, []).append(i)
    seen = {(u, i) for u, i, _, _ in toy["ratings"]}
    assert q.height == 4 * sum(SMALL[f"{s}_size"] for s in ("train", "valid", "test"))
    for row in q.iter_rows(named=True):
        user = users[row["user_id"]]
        positive = src[row["positive_item_ids"][0]]
        negatives = [src[i] for i in row["candidate_item_ids"] if src[i] != positive]
        assert len(row["candidate_item_ids"]) == 6 and len(negatives) == 5
        assert src[row["candidate_item_ids"][row["positive_index"]]] == positive
        if row["family"] == "interest":
            history = [src[i] for i in row["history_item_ids"]]
            seq = liked[user]
            k = seq.index(positive)
            assert seq[k - len(history) : k] == history  # the next liked item after the history
            assert all((user, n) not in seen for n in negatives)
            continue
        conds = row["conditions"]
        assert 1 <= len(conds) <= 2
        for c in conds:
            assert value(positive, c["relation"]) == c["value"]
            if c["via_item_id"] is not None:
                ref = src[c["via_item_id"]]
                assert ref != positive and value(ref, c["relation"]) == c["value"]
                assert ref not in negatives
                assert films[ref]["title"] in c["via_title"]
                assert films[ref]["title"] in row["text"]
            if c["false_value"] is not None:
                assert row["family"] == "hard"
                assert value(c and src[c["via_item_id"]], c["relation"]) != c["false_value"]
                assert value(positive, c["relation"]) != c["false_value"]
                assert c["false_value"] in row["text"]
        for n in negatives:
            assert any(value(n, c["relation"]) != c["value"] for c in conds)
        if row["family"] == "simple":
            # Each condition is shared by at least two of the user's liked films.
            for c in conds:
                assert sum(value(i, c["relation"]) == c["value"] for i in liked[user]) >= 2
        if row["family"] in ("medium", "hard"):
            assert any(c["via_item_id"] is not None for c in conds)


def test_hand_checked_texts(store, toy) -> None:
    q = make_queries(store, MakeQueriesConfig(**SMALL)).artifact.read("queries")
    hard = q.filter(pl.col("family") == "hard").row(0, named=True)
    c = hard["conditions"][0]
    assert c["relation"] in ("director", "writer")
    same = {"director": "by the same director", "writer": "by the same writer"}[c["relation"]]
    assert same in hard["text"] and c["via_title"] in hard["text"]
    interest = q.filter(pl.col("family") == "interest").row(0, named=True)
    for title in interest["history_titles"]:
        assert title in interest["text"]
    simple = q.filter(pl.col("family") == "simple")
    assert simple["text"].str.contains(r"^(Can you|I'm looking|Suggest|What)").all()
    assert not q["text"].str.contains(r"\{|\}|  | ,").any()


def test_counts_determinism_and_seed(store, toy) -> None:
    a = make_queries(store, MakeQueriesConfig(**SMALL)).artifact
    counts = a.manifest.metrics["counts"]
    assert counts == {
        f"{f}/{s}": SMALL[f"{s}_size"]
        for f in ("simple", "medium", "hard", "interest")
        for s in ("train", "valid", "test")
    }
    again = make_queries(store, MakeQueriesConfig(**SMALL), force=True).artifact
    assert again.read("queries").equals(a.read("queries"))
    other = make_queries(store, MakeQueriesConfig(seed=7, **SMALL)).artifact
    assert not other.read("queries").equals(a.read("queries"))


def test_no_leakage_and_disjoint_users(store, toy) -> None:
    q = make_queries(store, MakeQueriesConfig(**SMALL)).artifact.read("queries")
    pair = pl.col("positive_item_ids").list.first()
    held = q.filter(pl.col("split") != "train").select("user_id", p=pair)
    train = q.filter(pl.col("split") == "train").select("user_id", p=pair)
    assert train.join(held, on=["user_id", "p"], how="semi").height == 0
    d = make_queries(store, MakeQueriesConfig(users_disjoint=True, **SMALL)).artifact
    users = {
        s: set(d.read("queries").filter(pl.col("split") == s)["user_id"])
        for s in ("train", "valid", "test")
    }
    assert not users["train"] & users["test"] and not users["train"] & users["valid"]
    assert not users["valid"] & users["test"]


def test_checker_catches_broken_queries(store, toy) -> None:
    art = make_queries(store, MakeQueriesConfig(**SMALL)).artifact
    q = art.read("queries")
    g = GraphView(store.resolve("graph"))
    assert not any(check_queries(q, g).values())
    # Swap a negative of a director query for another film of that director.
    row = (
        q.filter(pl.col("conditions").list.len() == 1)
        .filter(pl.col("conditions").list.first().struct.field("relation") == "director")
        .row(0, named=True)
    )
    attr = row["conditions"][0]["attr_id"]
    same = g.facts.filter(pl.col("attr_id") == attr)["item_id"].to_list()
    intruder = next(i for i in same if i not in row["candidate_item_ids"])
    neg_at = next(n for n in range(6) if n != row["positive_index"])
    cands = list(row["candidate_item_ids"])
    cands[neg_at] = intruder
    broken = q.with_columns(
        candidate_item_ids=pl.when(pl.col("query_id") == row["query_id"])
        .then(pl.lit(cands, pl.List(pl.Int32)))
        .otherwise(pl.col("candidate_item_ids"))
    )
    assert check_queries(broken, g)["negatives_satisfying_all_conditions"] == 1
    # A misinformed query whose "false" value is in fact true.
    hard = q.filter(pl.col("family") == "hard").row(0, named=True)
    c = dict(hard["conditions"][0])
    c["false_attr_id"] = c["attr_id"]
    flipped = q.with_columns(
        conditions=pl.when(pl.col("query_id") == hard["query_id"])
        .then(pl.lit([c], q.schema["conditions"]))
        .otherwise(pl.col("conditions"))
    )
    assert check_queries(flipped, g)["false_premises_that_are_true"] == 1


def test_too_few_users_is_an_error_not_fewer_queries(store, toy) -> None:
    with pytest.raises(
        UserError,
        match=r"only \d+ interest queries can be made for the test "
        r"split \(asked for 500\)",
    ):
        make_queries(
            store, MakeQueriesConfig(**{**SMALL, "test_size": 500, "families": ["interest"]})
        )
    assert "queries" not in store.names()


def test_missing_graph(rerec) -> None:
    result = rerec("make-queries")
    assert result.exit_code == 2 and "no artifact 'graph'" in result.stderr


def test_cli_generates_and_checks(rerec, store, toy) -> None:
    args = [
        "make-queries",
        "--train-size",
        "12",
        "--valid-size",
        "3",
        "--test-size",
        "5",
        "--candidates",
        "6",
    ]
    result = rerec(*args)
    assert result.exit_code == 0, result.stderr
    assert "checks passed" in result.stdout and "interest" in result.stdout
    check = rerec("make-queries", "--check", "queries")
    assert check.exit_code == 0 and "checks passed" in check.stdout
    families = rerec(*args, "--family", "simple", "--family", "hard", "--output", "queries-sh")
    assert families.exit_code == 0, families.stderr
    assert set(store.resolve("queries-sh").read("queries")["family"]) == {"simple", "hard"}


def test_prompt_renderer_exact_text() -> None:
    row = {
        "text": "Can you recommend a comedy film directed by Woody Allen?",
        "family": "simple",
        "history_titles": ["Annie Hall (1977)", "Manhattan (1979)"],
        "candidate_titles": ["Heat (1995)", "Bananas (1971)"],
        "candidate_attributes": [
            [
                {"relation": "genre", "value": "Crime"},
                {"relation": "director", "value": "Michael Mann"},
            ],
            [{"relation": "genre", "value": "Comedy"}],
        ],
    }
    assert render_user_message(row) == (
        "Can you recommend a comedy film directed by Woody Allen?\n\n"
        "Candidates:\n1. Heat (1995)\n2. Bananas (1971)\n\n"
        "Reason in short paragraphs separated by blank lines. Then end with \\boxed{...} "
        "containing the exact title of the one candidate you recommend."
    )
    with_all = render_user_message(row, k=2, candidate_facts="full", history=1)
    assert "Items I liked recently: Manhattan (1979)." in with_all
    assert "2. Bananas (1971) — genre: Comedy" in with_all
    assert "the exact titles of the 2 candidates you recommend, best first, separated by ;" in (
        with_all
    )
    messages = render_messages(row)
    assert [m["role"] for m in messages] == ["system", "user"]
