"""Prompt options: compact and full candidate facts, facts of the items a request names, older
boolean settings, the options on the command line of train and eval (recorded in the policy,
eval's defaults), and prompt token counts against a brute-force count."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from stages.core.config import resolve_config
from stages.core.store import ArtifactStore
from stages.eval.config import EvalConfig
from stages.llm.prompts import (
    prompt_options,
    prompt_token_stats,
    render_messages,
    render_user_message,
)
from stages.queries.config import MakeQueriesConfig
from stages.queries.facts import candidate_attributes
from stages.queries.stage import make_queries
from stages.rl.config import TrainConfig
from tests.fixtures.cli import invoke
from tests.fixtures.graphs import build_toy_graph, toy_catalogue


def attrs(*pairs: str) -> list[dict[str, str]]:
    """attrs("genre=Crime", "director=Michael Mann") -> (relation, value) structs."""
    return [dict(zip(("relation", "value"), p.split("=", 1), strict=True)) for p in pairs]


HEAT = attrs(
    "genre=Crime",
    "genre=Drama",
    "director=Michael Mann",
    "writer=Michael Mann",
    "cast=Al Pacino",
    "decade=1990s",
    "country=United States",
)
BANANAS = attrs("genre=Comedy", "director=Woody Allen", "decade=1970s", "country=United States")


def condition(relation: str, value: str, **via: object) -> dict[str, object]:
    return {"relation": relation, "value": value, **via}


def row(family: str, conditions: list, named: list | None = None, text: str = "A request?"):
    return {
        "text": text,
        "family": family,
        "conditions": conditions,
        "history_titles": ["Annie Hall (1977)"],
        "candidate_titles": ["Heat (1995)", "Bananas (1971)"],
        "candidate_attributes": [HEAT, BANANAS],
        "named_items": named or [],
    }


def candidate_lines(message: str) -> list[str]:
    block = message.split("Candidates:\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()


def test_compact_facts_show_exactly_the_relations_the_request_names() -> None:
    q = row(
        "simple",
        [condition("director", "Woody Allen"), condition("country", "United States")],
    )
    assert candidate_lines(render_user_message(q, candidate_facts="compact")) == [
        "1. Heat (1995) — director: Michael Mann; country: United States",
        "2. Bananas (1971) — director: Woody Allen; country: United States",
    ]
    # a genre or a decade shows only when the request names it
    q = row("simple", [condition("genre", "Comedy"), condition("decade", "1970s")])
    assert candidate_lines(render_user_message(q, candidate_facts="compact")) == [
        "1. Heat (1995) — genre: Crime, Drama; decade: 1990s",
        "2. Bananas (1971) — genre: Comedy; decade: 1970s",
    ]
    # interest requests name no relation: their compact facts are the genres
    q = row("interest", [])
    assert candidate_lines(render_user_message(q, candidate_facts="compact")) == [
        "1. Heat (1995) — genre: Crime, Drama",
        "2. Bananas (1971) — genre: Comedy",
    ]
    # full shows every stored fact; none shows titles only
    full = candidate_lines(render_user_message(q, candidate_facts="full"))
    assert full[0] == (
        "1. Heat (1995) — genre: Crime, Drama; director: Michael Mann; writer: Michael Mann; "
        "cast: Al Pacino; decade: 1990s; country: United States"
    )
    assert candidate_lines(render_user_message(q)) == ["1. Heat (1995)", "2. Bananas (1971)"]


def test_index_facts_list_each_value_with_the_candidates_that_have_it() -> None:
    q = row(
        "simple",
        [condition("country", "United States"), condition("director", "Woody Allen")],
    )
    message = render_user_message(q, candidate_facts="index")
    assert candidate_lines(message) == ["1. Heat (1995)", "2. Bananas (1971)"]
    # after the titles, relations and values in the order the candidates first show them
    assert message.split("Candidates:\n1. Heat (1995)\n2. Bananas (1971)\n\n", 1)[1] == (
        "Candidates by director:\n"
        "- Michael Mann: Heat (1995)\n"
        "- Woody Allen: Bananas (1971)\n\n"
        "Candidates by country:\n"
        "- United States: Heat (1995), Bananas (1971)\n\n"
        "Reason in short paragraphs separated by blank lines. Then end with \\boxed{...} "
        "containing the exact title of the one candidate you recommend."
    )
    # interest requests: the genres, a title under each of its genres
    q = row("interest", [])
    assert "Candidates by genre:\n- Crime: Heat (1995)\n- Drama: Heat (1995)\n" in (
        render_user_message(q, candidate_facts="index")
    )
    assert prompt_options({"candidate_facts": "index"})["candidate_facts"] == "index"


def test_index_only_is_the_index_without_the_numbered_list() -> None:
    q = row(
        "simple",
        [condition("country", "United States"), condition("director", "Woody Allen")],
    )
    index = render_user_message(q, candidate_facts="index")
    only = render_user_message(q, candidate_facts="index-only")
    numbered = "Candidates:\n1. Heat (1995)\n2. Bananas (1971)\n\n"
    assert numbered in index
    assert only == index.replace(numbered, "")
    assert prompt_options({"candidate_facts": "index-only"})["candidate_facts"] == "index-only"


def test_index_only_names_the_candidates_no_index_line_lists() -> None:
    # Bananas has no writer: the index of a writer request lists only Heat, so without the
    # numbered list Bananas must be named on its own line, or the model would never see it
    q = row("simple", [condition("writer", "Michael Mann")])
    message = render_user_message(q, candidate_facts="index-only")
    assert message == (
        "A request?\n\n"
        "Candidates by writer:\n"
        "- Michael Mann: Heat (1995)\n\n"
        "Other candidates: Bananas (1971)\n\n"
        "Reason in short paragraphs separated by blank lines. Then end with \\boxed{...} "
        "containing the exact title of the one candidate you recommend."
    )
    # the numbered list of the index mode shows every candidate already: no such line there
    assert "Other candidates" not in render_user_message(q, candidate_facts="index")


def test_named_facts_show_the_reference_items_true_facts() -> None:
    jaws = {
        "item_id": 7,
        "title": "Jaws (1975)",
        "attributes": attrs("genre=Thriller", "director=Steven Spielberg", "decade=1970s"),
    }
    hard = row(
        "hard",
        [
            condition(
                "director",
                "Steven Spielberg",
                via_item_id=7,
                via_title="Jaws (1975)",
                false_value="Woody Allen",
            )
        ],
        [jaws],
        text="I loved Jaws (1975), the film directed by Woody Allen. Another by the same director?",
    )
    message = render_user_message(hard, candidate_facts="compact", named_facts=True)
    assert (
        "?\n\nAbout the items mentioned:\n- Jaws (1975) — director: Steven Spielberg\n\n"
        "Candidates:\n1. Heat (1995) — director: Michael Mann\n"
    ) in message
    full = render_user_message(hard, candidate_facts="full", named_facts=True)
    assert "- Jaws (1975) — genre: Thriller; director: Steven Spielberg; decade: 1970s" in full
    assert "About the items" not in render_user_message(hard, candidate_facts="compact")
    liked = [
        {"item_id": 1, "title": "Heat (1995)", "attributes": HEAT},
        {"item_id": 2, "title": "Bananas (1971)", "attributes": BANANAS},
    ]
    interest = row("interest", [], liked)
    assert (
        "About the items mentioned:\n- Heat (1995) — genre: Crime, Drama\n"
        "- Bananas (1971) — genre: Comedy\n\n"
    ) in render_user_message(interest, candidate_facts="compact", named_facts=True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[ArtifactStore, Path]:
    root = tmp_path_factory.mktemp("prompts")
    store = ArtifactStore(root / "workdir")
    build_toy_graph(store, root, toy_catalogue())
    make_queries(
        store, MakeQueriesConfig(train_size=6, valid_size=2, test_size=4, candidates=5, seed=1)
    )
    return store, root


def test_generated_queries_name_the_reference_and_the_liked_items(toy) -> None:
    store, _ = toy
    q = store.resolve("queries").read("queries")
    truth = {f["title"]: f for f in toy_catalogue()["films"].values()}
    for r in q.to_dicts():
        named = r["named_items"]
        if r["family"] == "interest":
            assert [n["item_id"] for n in named] == r["history_item_ids"]
            assert [n["title"] for n in named] == r["history_titles"]
        elif r["family"] in ("medium", "hard"):
            (c,) = r["conditions"]
            assert [n["item_id"] for n in named] == [c["via_item_id"]]
            facts = {(a["relation"], a["value"]) for a in named[0]["attributes"]}
            film = truth[named[0]["title"].rsplit(" (", 1)[0]]
            assert (c["relation"], c["value"]) in facts  # the reference's true value
            assert (c["relation"], film[c["relation"]]) in facts
            assert c["false_value"] is None or (c["relation"], c["false_value"]) not in facts
        else:
            assert named == []
        assert len(r["candidate_attributes"]) == len(r["candidate_item_ids"])


def test_the_value_cap_never_hides_a_condition_value() -> None:
    # one film with 5 cast members (attribute ids 0-4, the most common first) and a genre
    facts = pl.DataFrame(
        {
            "item_id": [1] * 6,
            "attr_id": [0, 1, 2, 3, 4, 5],
            "relation": ["cast"] * 5 + ["genre"],
            "value": ["A", "B", "C", "D", "E", "Drama"],
        },
        schema_overrides={"item_id": pl.Int32, "attr_id": pl.Int32},
    )
    g = SimpleNamespace(
        facts=facts, items=pl.DataFrame({"item_id": [1]}, schema={"item_id": pl.Int32})
    )
    cond = pl.Struct({"relation": pl.String, "value": pl.String, "attr_id": pl.Int32})
    q = pl.DataFrame(
        {
            "query_id": ["a", "b"],
            "candidate_item_ids": [[1], [1]],
            "conditions": [[{"relation": "cast", "value": "E", "attr_id": 4}], []],
        },
        schema={
            "query_id": pl.String,
            "candidate_item_ids": pl.List(pl.Int32),
            "conditions": pl.List(cond),
        },
    )
    shown = candidate_attributes(q, g).sort("query_id")["candidate_attributes"].to_list()
    values = [[a["value"] for a in cands[0]] for cands in shown]
    assert values == [["Drama", "A", "B", "E"], ["Drama", "A", "B", "C"]]


def test_boolean_candidate_facts_read_as_full_and_none(tmp_path) -> None:
    yaml = tmp_path / "old.yaml"
    yaml.write_text(
        "train:\n  candidate_facts: true\n  history: 2\neval:\n  candidate_facts: false\n"
    )
    assert resolve_config(TrainConfig, section="train", config_file=yaml).candidate_facts == "full"
    assert resolve_config(EvalConfig, section="eval", config_file=yaml).candidate_facts == "none"
    assert EvalConfig().candidate_facts is None  # not given: the policy's
    # a policy.json written before named facts existed
    old_policy = {"k": 1, "candidate_facts": True, "history": 3}
    assert prompt_options(old_policy) == {
        "candidate_facts": "full",
        "named_facts": False,
        "history": 3,
    }
    assert prompt_options({}) == {"candidate_facts": "none", "named_facts": False, "history": 0}
    q = row("simple", [condition("director", "Woody Allen")])
    assert render_user_message(q, candidate_facts=True) == render_user_message(
        q, candidate_facts="full"
    )
    assert render_user_message(q, candidate_facts=False) == render_user_message(q)
    with pytest.raises(ValueError, match="none, compact, index, index-only, full"):
        render_user_message(q, candidate_facts="short")


def test_prompt_token_stats_against_a_brute_force_count(toy) -> None:
    from tests.fixtures.tiny_llm import train_tokenizer

    store, _ = toy
    q = store.resolve("queries").read("queries")
    tok = train_tokenizer([render_user_message(r, candidate_facts="full") for r in q.to_dicts()])
    options = {"k": 1, "candidate_facts": "compact", "named_facts": True, "history": 2}
    stats = prompt_token_stats(q, tok, **options)
    lengths: dict[str, list[int]] = {}
    for r in q.to_dicts():
        ids = tok.apply_chat_template(
            render_messages(r, **options), add_generation_prompt=True, return_dict=True
        )["input_ids"]
        lengths.setdefault(r["family"], []).append(len(ids))
        lengths.setdefault("all", []).append(len(ids))
    expect = [
        (f, len(lengths[f]), float(statistics.median(lengths[f])), max(lengths[f]))
        for f in ("simple", "medium", "hard", "interest", "all")
    ]
    assert stats.rows() == expect
    assert stats.columns == ["family", "n", "median", "max"]
    longer = prompt_token_stats(q, tok, candidate_facts="full", named_facts=True)
    assert (longer["median"] > prompt_token_stats(q, tok)["median"]).all()


def test_prompt_options_from_the_command_line_reach_the_policy_and_eval(toy, monkeypatch) -> None:
    from tests.fixtures.tiny_llm import write_tiny_llm

    store, root = toy
    q = store.resolve("queries").read("queries")
    model = write_tiny_llm(
        root / "tiny", [render_user_message(r, candidate_facts="full") for r in q.to_dicts()]
    )
    train = invoke(
        store.root,
        monkeypatch,
        "train",
        "--model",
        str(model),
        "--candidate-facts",
        "compact",
        "--named-facts",
        "--history",
        "2",
        "--no-pas",
        "--steps",
        "1",
        "--limit",
        "2",
        "--prompts-per-step",
        "1",
        "-G",
        "2",
        "--max-completion-length",
        "8",
        "--output",
        "policy-p",
    )
    assert train.exit_code == 0, train.output
    assert "prompt tokens (median / max): " in train.stderr
    art = store.resolve("policy-p")
    policy = json.loads(art.file("policy.json").read_text())
    assert (policy["candidate_facts"], policy["named_facts"], policy["history"]) == (
        "compact",
        True,
        2,
    )
    assert art.manifest.metrics["prompt_tokens"]["all"]["n"] == 2

    def evaluate(output: str, *args: str) -> tuple[dict, dict]:
        r = invoke(
            store.root,
            monkeypatch,
            "eval",
            "--policy",
            "policy-p",
            "--limit",
            "6",
            "--max-new-tokens",
            "2",
            "--bootstrap",
            "0",
            "--output",
            output,
            *args,
        )
        assert r.exit_code == 0, r.output
        assert "prompt tokens (median / max): " in r.stderr
        ev = store.resolve(output)
        return json.loads(ev.file("eval.json").read_text()), ev.manifest.metrics["prompt_tokens"]

    about, as_trained = evaluate("eval-as-trained")  # the policy's options
    assert (about["candidate_facts"], about["named_facts"], about["history"]) == (
        "compact",
        True,
        2,
    )
    about, bare = evaluate("eval-bare", "--candidate-facts", "none", "--no-named-facts")
    assert (about["candidate_facts"], about["named_facts"], about["history"]) == ("none", False, 2)
    assert bare["all"]["median"] < as_trained["all"]["median"]
    bad = invoke(store.root, monkeypatch, "eval", "--candidate-facts", "short", "-q")
    assert bad.exit_code == 2 and "candidate_facts" in bad.stderr
