"""`rerec sft`: targets written from the graph (checked word by word), disjoint halves of the
train split, and a policy that RL, eval and plain transformers start from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from stages.core.store import ArtifactStore
from stages.llm.prompts import render_user_message
from stages.queries.reader import read_split
from stages.sft.data import write_completion
from tests.fixtures.cli import invoke
from tests.fixtures.workdirs import build_toy_workdir

FACTS = {
    1: {"director": ["Woody Allen"], "genre": ["Comedy"], "decade": ["1970s"]},
    2: {"director": ["Woody Allen"], "genre": ["Drama"], "decade": ["1970s"]},
    3: {"director": ["John Carpenter"], "genre": ["Horror"], "decade": ["1970s"]},
    4: {"director": ["Renny Harlin"], "genre": ["Action"], "decade": ["1990s"]},
    5: {"director": ["Woody Allen"], "genre": ["Comedy"], "decade": ["1970s"]},
}
TITLES = ["Annie Hall (1977)", "Interiors (1978)", "Halloween (1978)", "Cliffhanger (1993)"]


def query(family: str, conditions: list[dict], positive: int = 0, history=None) -> dict:
    return {
        "query_id": "q",
        "family": family,
        "conditions": conditions,
        "candidate_item_ids": [1, 2, 3, 4],
        "candidate_titles": TITLES,
        "positive_index": positive,
        "history_item_ids": history or [],
    }


def cond(relation, value, via=None, false=None) -> dict:
    return {"relation": relation, "value": value, "via_title": via, "false_value": false}


class FixedChoice:
    """A generator that always picks phrasing 0."""

    def integers(self, n: int) -> int:
        return 0


def test_simple_target_restates_shows_the_facts_and_rules_out_the_near_miss() -> None:
    q = query("simple", [cond("director", "Woody Allen"), cond("genre", "Comedy")])
    text = write_completion(q, FACTS, FixedChoice())
    assert text == (
        "The request asks for a film directed by Woody Allen and in the genre Comedy.\n\n"
        "Annie Hall (1977) fits: it was directed by Woody Allen and is in the genre Comedy.\n\n"
        "Interiors (1978) was directed by Woody Allen, but it is in the genre Drama, so it "
        "does not fit.\n\n"
        "\\boxed{Annie Hall (1977)}"
    )


def test_misinformed_target_corrects_the_premise_and_rules_out_the_trap() -> None:
    q = query(
        "hard",
        [cond("director", "Woody Allen", via="Manhattan (1979)", false="Renny Harlin")],
    )
    text = write_completion(q, FACTS, FixedChoice())
    paragraphs = text.split("\n\n")
    assert paragraphs[0] == (
        "The request says Manhattan (1979) was directed by Renny Harlin, but it was directed "
        "by Woody Allen: the answer should follow the true fact, not the false one. The request "
        "asks for a film directed by Woody Allen."
    )
    # the trap is the candidate with the false premise's value
    assert paragraphs[2] == "Not Cliffhanger (1993): it was directed by Renny Harlin."
    assert paragraphs[-1] == "\\boxed{Annie Hall (1977)}"


def test_implicit_target_resolves_the_reference_item() -> None:
    q = query("medium", [cond("director", "Woody Allen", via="Manhattan (1979)")])
    first = write_completion(q, FACTS, FixedChoice()).split("\n\n")[0]
    assert first.startswith(
        "Manhattan (1979) was directed by Woody Allen, so the answer should be directed by "
        "Woody Allen too."
    )


def test_interest_target_reasons_from_what_the_favourites_share() -> None:
    q = query("interest", [], positive=0, history=[5, 2, 3])
    text = write_completion(q, FACTS, FixedChoice())
    first, fits = text.split("\n\n")[:2]
    assert first == (
        "The recent favourites have this in common: films from the 1970s (3 of 3) and "
        "directed by Woody Allen (2 of 3)."
    )
    assert fits == ("Annie Hall (1977) fits: it is from the 1970s and was directed by Woody Allen.")
    # ruled out by a shared fact the answer has and it lacks (Interiors has both: not a miss)
    assert text.split("\n\n")[2] == (
        "Halloween (1978) is from the 1970s, but it is not directed by Woody Allen, so it does "
        "not fit."
    )


def test_interest_target_never_rules_out_by_a_fact_the_favourites_share() -> None:
    # the answer (Cliffhanger) shares nothing with the favourites: nobody is ruled out
    q = query("interest", [], positive=3, history=[5, 2, 1])
    paragraphs = write_completion(q, FACTS, FixedChoice()).split("\n\n")
    assert len(paragraphs) == 3
    assert paragraphs[-1] == "\\boxed{Cliffhanger (1993)}"


def shown(item: int) -> list[dict]:
    """A candidate's facts as the queries artifact stores them (what the prompt shows)."""
    return [{"relation": r, "value": v} for r, vs in FACTS[item].items() for v in vs]


def test_index_target_copies_the_prompts_most_selective_index_line_before_the_answer() -> None:
    q = query("simple", [cond("director", "Woody Allen"), cond("genre", "Comedy")])
    q |= {"text": "A Woody Allen comedy?", "candidate_attributes": [shown(i) for i in (1, 2, 3, 4)]}
    paragraphs = write_completion(q, FACTS, FixedChoice(), layout="index").split("\n\n")
    # Woody Allen's line lists two candidates, Comedy's one: the narrower line is copied
    assert paragraphs[1] == "Candidates by genre:\n- Comedy: Annie Hall (1977)"
    # line for line what the index prompt shows, so the title after "- Comedy:" is a copy
    prompt = render_user_message(q, candidate_facts="index").split("\n")
    assert all(line in prompt for line in paragraphs[1].split("\n"))
    # the rest is the compact target's
    compact = write_completion(q, FACTS, FixedChoice()).split("\n\n")
    assert paragraphs[:1] + paragraphs[2:] == compact


def test_index_only_targets_are_the_index_targets() -> None:
    # the lookup line is copied from the index lines, which both layouts show alike
    q = query("simple", [cond("director", "Woody Allen"), cond("genre", "Comedy")])
    q |= {"text": "A Woody Allen comedy?", "candidate_attributes": [shown(i) for i in (1, 2, 3, 4)]}
    only = write_completion(q, FACTS, FixedChoice(), layout="index-only")
    assert only == write_completion(q, FACTS, FixedChoice(), layout="index")
    lookup = only.split("\n\n")[1]
    prompt = render_user_message(q, candidate_facts="index-only").split("\n")
    assert lookup.startswith("Candidates by") and all(x in prompt for x in lookup.split("\n"))


def test_index_target_has_no_lookup_when_no_candidate_shows_the_wanted_value() -> None:
    q = query("simple", [cond("director", "Woody Allen")])
    q["candidate_attributes"] = [[] for _ in TITLES]
    indexed = write_completion(q, FACTS, FixedChoice(), layout="index")
    assert indexed == write_completion(q, FACTS, FixedChoice())


def test_index_lookup_never_shows_a_line_without_the_answer() -> None:
    # the graph says Annie Hall was directed by Woody Allen, but the prompt (which caps the
    # values shown per relation) lists only Interiors under him: that line would not lead to it
    q = query("simple", [cond("director", "Woody Allen")])
    attrs = [shown(i) for i in (1, 2, 3, 4)]
    attrs[0] = [a for a in attrs[0] if a["relation"] != "director"]
    q |= {"text": "A Woody Allen film?", "candidate_attributes": attrs}
    assert "- Woody Allen: Interiors (1978)" in render_user_message(q, candidate_facts="index")
    paragraphs = write_completion(q, FACTS, FixedChoice(), layout="index").split("\n\n")
    assert not any(p.startswith("Candidates by") for p in paragraphs)


def test_interest_index_target_copies_the_genre_line_of_a_shared_genre() -> None:
    facts = {**FACTS, 6: {"genre": ["Comedy"]}, 7: {"genre": ["Comedy"]}}
    q = query("interest", [], positive=0, history=[6, 7, 3])
    q |= {"text": "Next?", "candidate_attributes": [shown(i) for i in (1, 2, 3, 4)]}
    paragraphs = write_completion(q, facts, FixedChoice(), layout="index").split("\n\n")
    assert paragraphs[1] == "Candidates by genre:\n- Comedy: Annie Hall (1977)"
    prompt = render_user_message(q, candidate_facts="index").split("\n")
    assert all(line in prompt for line in paragraphs[1].split("\n"))


@pytest.mark.parametrize("holders, shown_line", [(4, True), (5, False)])
def test_index_lookup_only_when_the_line_narrows_the_choice(holders, shown_line) -> None:
    titles = [f"Film {n} (1990)" for n in range(6)]
    facts = {n: {"genre": ["Comedy" if n < holders else "Drama"]} for n in range(6)}
    q = query("simple", [cond("genre", "Comedy")])
    q |= {
        "text": "A comedy?",
        "candidate_item_ids": list(range(6)),
        "candidate_titles": titles,
        "candidate_attributes": [
            [{"relation": "genre", "value": facts[n]["genre"][0]}] for n in range(6)
        ],
    }
    paragraphs = write_completion(q, facts, FixedChoice(), layout="index").split("\n\n")
    line = "Candidates by genre:\n- Comedy: " + ", ".join(titles[:holders])
    assert (line in paragraphs) is shown_line


def test_phrasing_depends_on_the_seed_only() -> None:
    q = query("simple", [cond("director", "Woody Allen"), cond("genre", "Comedy")])
    texts = {write_completion(q, FACTS, np.random.default_rng([s, 0])) for s in range(12)}
    assert len(texts) > 1
    again = {write_completion(q, FACTS, np.random.default_rng([s, 0])) for s in range(12)}
    assert texts == again
    assert all(t.endswith("\\boxed{Annie Hall (1977)}") for t in texts)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[ArtifactStore, Path]:
    return build_toy_workdir(tmp_path_factory.mktemp("sft"))


def test_sft_and_rl_halves_of_the_train_split_are_disjoint(toy) -> None:
    store, _ = toy
    queries = store.resolve("queries")
    sft = read_split(queries, "train", part="sft")
    rl = read_split(queries, "train", part="rl")
    every = read_split(queries, "train")
    assert set(sft["query_id"]).isdisjoint(rl["query_id"])
    assert sorted([*sft["query_id"], *rl["query_id"]]) == sorted(every["query_id"])
    for fam in every["family"].unique():
        n = every.filter(pl.col("family") == fam).height
        assert sft.filter(pl.col("family") == fam).height == (n + 1) // 2


def test_index_examples_copy_lines_of_their_own_prompt(toy) -> None:
    """The stage renders index prompts and lookup targets from the same query rows."""
    from stages.sft.config import SFTConfig
    from stages.sft.stage import build_examples

    store, _ = toy
    queries = store.resolve("queries")
    train = read_split(queries, "train", part="sft")
    examples = build_examples(
        train, store.input_of(queries, "graph"), SFTConfig(candidate_facts="index")
    )
    looked_up = 0
    for prompt, completion in zip(examples["prompt"], examples["completion"], strict=True):
        user = json.loads(prompt)[-1]["content"].split("\n")
        lookup = [p for p in completion.split("\n\n") if p.startswith("Candidates by ")]
        for paragraph in lookup:
            assert all(line in user for line in paragraph.split("\n")), (paragraph, user)
            answer = completion.rsplit("\\boxed{", 1)[1].rstrip("}")
            assert answer in paragraph
        looked_up += bool(lookup)
    assert looked_up > 0


def test_sft_writes_a_policy_that_train_eval_and_transformers_start_from(toy, monkeypatch) -> None:
    store, model = toy
    r = invoke(
        store.root, monkeypatch, "sft", "--model", str(model), "--steps", "3",
        "--batch-size", "2", "--micro-batch", "1", "--lr", "1e-3", "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    sft = store.resolve("sft")
    assert sft.manifest.kind == "policy"
    log = sft.read("log")
    assert log["step"].to_list() == [1, 2, 3]
    assert log["loss"].is_finite().all() and (log["tokens"] > 0).all()
    examples = sft.read("examples")
    train_sft = read_split(store.resolve("queries"), "train", part="sft")
    assert sorted(examples["query_id"]) == sorted(train_sft["query_id"])
    assert examples["completion"].str.contains(r"\\boxed\{").all()
    info = json.loads(sft.file("policy.json").read_text())
    assert info["algo"] == "sft" and info["adapter"] is False
    # plain transformers loads model/ as a full model
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(sft.file("model"))
    # RL starts from it; eval accepts it like any policy
    r = invoke(
        store.root, monkeypatch, "train", "--model", "sft", "--no-pas", "--steps", "1",
        "--prompts-per-step", "1", "-G", "2", "--max-completion-length", "8",
        "--output", "policy-from-sft", "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rl = store.resolve("policy-from-sft")
    assert json.loads(rl.file("policy.json").read_text())["base_model"] == sft.ref
    assert [i.name for i in rl.manifest.inputs].count("sft") == 1
    r = invoke(
        store.root, monkeypatch, "eval", "--policy", "policy-from-sft", "--max-new-tokens", "6",
        "--bootstrap", "0", "-q",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke(
        store.root, monkeypatch, "eval", "--policy", "sft", "--max-new-tokens", "6",
        "--bootstrap", "0", "-q",
    )  # fmt: skip
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "mode, lost", [(None, "their targets"), ("keep_end", "the start of their prompts")]
)
def test_examples_longer_than_max_length_are_refused_not_cut(toy, monkeypatch, mode, lost):
    store, model = toy
    extra = ["--trl", f"truncation_mode={mode}"] if mode else []
    r = invoke(
        store.root, monkeypatch, "sft", "--model", str(model), "--steps", "1",
        "--batch-size", "1", "--micro-batch", "1", "--max-length", "40", "--output", "sft-cut",
        *extra,
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "sft examples are longer than --max-length 40 tokens" in r.output
    assert f"TRL would cut {lost} off: raise --max-length to" in r.output
    assert not store.exists("sft-cut")


def test_an_interrupted_sft_resumes_to_what_an_unbroken_one_writes(toy, monkeypatch) -> None:
    """Checkpoints every --save-steps; `--resume` continues from the newest and ends with the
    weights and the step log of an unbroken run (LoRA dropout and data order included). The
    run folder goes once the policy is written; the save interval is not part of the version."""
    from safetensors.torch import load_file

    from stages.core.errors import UserError
    from stages.sft.config import SFTConfig
    from stages.sft.stage import sft_policy

    store, model = toy
    base = {"model": str(model), "steps": 5, "batch_size": 2, "micro_batch": 1, "lr": 1e-3}
    whole = sft_policy(store, SFTConfig(**base, save_steps=2, output="sft-whole")).artifact

    def stop_at(step: int):
        def on_step(row: dict, total: int) -> None:
            if row["step"] == step:
                raise KeyboardInterrupt

        return on_step

    cfg = SFTConfig(**base, save_steps=2, output="sft-resumed")
    with pytest.raises(UserError, match="interrupted at step 3; the checkpoint of step 2 is in"):
        sft_policy(store, cfg, on_step=stop_at(3))
    assert not store.exists("sft-resumed")
    (folder,) = (store.root / ".runs").glob("sft-resumed-*")
    # resumed with another interval (it counts from the resume), interrupted again
    every_3 = cfg.model_copy(update={"save_steps": 3})
    with pytest.raises(UserError, match="interrupted at step 4; the checkpoint of step 3 is in"):
        sft_policy(store, every_3, resume=True, on_step=stop_at(4))
    # a checkpoint whose marker a crash cut short is not complete: the one before is taken
    (folder / "checkpoint-3" / "rerec_sft_state.json").write_text('{"log": [')
    resumed = sft_policy(store, every_3, resume=True).artifact
    assert not folder.exists()
    for weights in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        want, got = load_file(whole.file(weights)), load_file(resumed.file(weights))
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), (weights, key)
    same = ["step", "epoch", "loss", "token_accuracy", "learning_rate", "grad_norm", "tokens"]
    log = resumed.read("log")
    assert log.select(same).equals(whole.read("log").select(same))
    m = resumed.manifest.metrics
    assert m["tokens_per_second"] == pytest.approx(log["tokens"].sum() / log["seconds"].sum())
    assert resumed.manifest.config == {**whole.manifest.config, "output": "sft-resumed"}
    # nothing to resume: one line, exit 2
    r = invoke(store.root, monkeypatch, "sft", "--model", str(model), "--output", "sft-new",
               "--resume", "-q")  # fmt: skip
    assert r.exit_code == 2 and "nothing to resume" in r.stderr, r.output
