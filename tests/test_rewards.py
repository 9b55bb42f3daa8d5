"""Rewards, RAAE and the curriculum against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

from stages.llm.answers import parse_boxed
from stages.rewards.dual_graph import RewardIndex, RewardWeights, score_completion
from stages.rl.curriculum import CurriculumSampler, curriculum_order, difficulties
from stages.rl.raae import group_token_advantages, penalised, segment_spans, token_rewards
from stages.text.titles import normalise_title, normalise_title_str

QUERY = {
    "query_id": "q1",
    "candidate_item_ids": [10, 11, 12],
    "candidate_titles": ["Heat (1995)", "Bananas (1971)", "Sleeper (1973)"],
    "positive_item_ids": [11],
}


@pytest.fixture
def index() -> RewardIndex:
    attrs = pl.DataFrame(
        {"item_id": [10, 10, 10, 11, 11, 11, 12, 12, 12], "attr_id": [5, 6, 7, 1, 2, 3, 1, 2, 8]}
    )
    emb = pl.DataFrame(
        {"item_id": [10, 11, 12], "embedding": [[2.0, 0.0], [0.0, 3.0], [0.6, 0.8]]},
        schema={"item_id": pl.Int32, "embedding": pl.Array(pl.Float32, 2)},
    )
    return RewardIndex.from_tables(attrs, emb)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("so \\boxed{Heat}", ["Heat"]),
        ("\\boxed{ Heat ; Bananas (1971) }", ["Heat", "Bananas (1971)"]),
        ("\\boxed{a {nested} one} then \\boxed{second}", ["a {nested} one"]),
        ("no box here", None),
        ("\\boxed{unclosed", None),
        ("\\boxed{}", []),
    ],
)
def test_parse_boxed(text, want) -> None:
    assert parse_boxed(text) == want


def test_reward_by_hand(index) -> None:
    w = RewardWeights()
    wrong = score_completion("Sleeper is by Allen.\n\n\\boxed{Sleeper}", QUERY, index, w)
    # format 0.5; NDCG 0; QAS |{1,2,8} & {1,2,3}| / 3 = 2/3; PAS cos([.6,.8],[0,1]) = 0.8
    assert (wrong.format, wrong.ndcg) == (0.5, 0.0)
    assert wrong.qas == pytest.approx(2 / 3) and wrong.pas == pytest.approx(0.8)
    assert wrong.total == pytest.approx(0.1 * 0.5 + 0.2 * 2 / 3 + 0.1 * 0.8)
    assert not wrong.correct and wrong.predicted == (12,)
    right = score_completion("\\boxed{bananas (1971)}", QUERY, index, w)
    assert right.total == pytest.approx(0.05 + 1.0 + 0.2 + 0.1) and right.correct
    unboxed = score_completion("Bananas", QUERY, index, w)
    assert unboxed.total == pytest.approx(-0.05) and unboxed.predicted == ()
    assert score_completion("\\boxed{2}", QUERY, index, w).predicted == (11,)
    assert score_completion("\\boxed{Banannas}", QUERY, index, w).predicted == (11,)
    assert score_completion("\\boxed{The Bananas}", QUERY, index, w).predicted == (11,)
    assert score_completion("\\boxed{Jaws}", QUERY, index, w).predicted == ()
    two = score_completion("\\boxed{Heat; Bananas}", QUERY, index, RewardWeights(k=2))
    assert two.ndcg == pytest.approx(1 / math.log2(3))
    assert two.total == pytest.approx(0.05 + 1 / math.log2(3))  # Heat shares nothing


def test_qas_uses_attributes_shared_by_all_ground_truths(index) -> None:
    # Ground truths 11 {1,2,3} and 12 {1,2,8} share {1,2}; Bananas has both.
    assert index.qas(11, [11, 12]) == 1.0
    assert index.qas(10, [11, 12]) == 0.0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_reward_never_raises(text) -> None:
    attrs = pl.DataFrame({"item_id": [10, 11], "attr_id": [1, 1]})
    parts = score_completion(text, QUERY, RewardIndex.from_tables(attrs), RewardWeights())
    assert math.isfinite(parts.total)


# Characters Python's Unicode tables do not know yet are left out: Rust's regex (Polars) may.
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cn", "Cs"))))
def test_title_normalisation_agrees_with_the_table_version(text) -> None:
    table = pl.DataFrame({"t": [text]}, schema={"t": pl.String}).select(
        normalise_title(pl.col("t"))
    )["t"][0]
    assert normalise_title_str(text) == table


# ------------------------------------------------------------------ RAAE
def word_tokenizer(text: str) -> Tokenizer:
    words = sorted(set(text.replace("\n", " ").split()) | {"[UNK]"})
    tok = Tokenizer(models.WordLevel({w: n for n, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_raae_token_by_token() -> None:
    text = "Heat is crime.\n\nSleeper is comedy.\n\nSo \\boxed{Sleeper}"
    enc = word_tokenizer(text).encode(text)
    assert enc.tokens == [
        "Heat",
        "is",
        "crime.",
        "Sleeper",
        "is",
        "comedy.",
        "So",
        "\\boxed{Sleeper}",
    ]
    r = 0.2633
    got = token_rewards(text, enc.offsets, r, "Sleeper (1973)")
    # Paragraph 2 names the wrong item: 0.7 r; the boxed paragraph and the first keep r.
    np.testing.assert_allclose(got, [r, r, r, 0.7 * r, 0.7 * r, 0.7 * r, r, r])
    assert (token_rewards(text, enc.offsets, r, None) == r).all()  # right answer: no penalty


def test_penalty_always_lowers() -> None:
    assert penalised(1.0, 0.3) == pytest.approx(0.7)
    assert penalised(-0.05, 0.3) == pytest.approx(-0.08)  # further down, not up
    assert penalised(0.0, 0.3) == pytest.approx(-0.03)


def test_segments_fall_back_to_lines() -> None:
    text = "one\ntwo\nthree"
    assert [text[a:b] for a, b in segment_spans(text)] == ["one\n", "two\n", "three"]
    para = "a\nb\n\nc"
    assert [para[a:b] for a, b in segment_spans(para)] == ["a\nb\n\n", "c"]


def test_group_token_advantages_by_hand() -> None:
    """The function training uses, fed the group statistics both modes build: two completions
    of one group with token rewards [1, 1] and [0, 0, 0] (padded to 3 tokens)."""
    tok_r = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    # per-token: sum, sum of squares and count over the group's 5 tokens -> mean 0.4, std sqrt .24
    pooled = torch.tensor([[2.0, 2.0, 5.0]] * 2, dtype=torch.float64)
    adv = group_token_advantages(tok_r, mask, pooled, eps=0.0)
    a, b = 0.6 / math.sqrt(0.24), -0.4 / math.sqrt(0.24)
    np.testing.assert_allclose(adv.numpy(), [[a, a, 0.0], [b, b, b]])
    # per-completion: the two scalar rewards 1 and 0 -> mean 0.5, std 0.5 (as mean, E[r^2], 1)
    scalar = torch.tensor([[0.5, 0.5, 1.0]] * 2, dtype=torch.float64)
    adv = group_token_advantages(tok_r, mask, scalar, eps=0.0)
    np.testing.assert_allclose(adv.numpy(), [[1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]])


# ------------------------------------------------------------------ curriculum
def test_curriculum_on_a_toy_history() -> None:
    rollouts = pl.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"],
            "ndcg": [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.6],
        }
    )
    d = dict(difficulties(rollouts).iter_rows())
    assert d == pytest.approx({"q1": 0.0, "q2": 0.5, "q3": 1.0, "q4": 0.2})
    order, fallback = curriculum_order(["q1", "q2", "q3", "q4", "q5"], d, tau=0.1)
    # q1 mastered and dropped; q5 unseen counts as 0.5 and follows q2 (dataset order).
    assert order == ["q4", "q2", "q5", "q3"] and not fallback
    order, fallback = curriculum_order(["q1", "q2", "q3", "q4", "q5"], d, tau=0.1, min_keep=5)
    assert order == ["q1", "q4", "q2", "q5", "q3"] and fallback


def test_curriculum_sampler_state_round_trip() -> None:
    sampler = CurriculumSampler(["q1", "q2", "q3", "q4"], tau=0.1, seed=3)
    first = list(sampler)
    assert sorted(first) == [0, 1, 2, 3]
    sampler.record(
        pl.DataFrame({"query_id": ["q1", "q2", "q3", "q4"], "ndcg": [0.0, 1.0, 0.5, 0.2]})
    )
    sampler.set_epoch(1)
    # difficulty = 1 - ndcg: q1 1.0, q2 0.0 (mastered, dropped), q3 0.5, q4 0.8
    assert list(sampler) == [2, 3, 0]
    restored = CurriculumSampler(["q1", "q2", "q3", "q4"], seed=3)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == list(sampler) and restored.epoch == 1


def test_batch_scoring_matches_one_by_one(index) -> None:
    from stages.rewards.dual_graph import score_batch

    texts = ["\\boxed{Sleeper}", "\\boxed{Bananas}", "nothing", "\\boxed{1}", "\\boxed{Jaws}"]
    batch = score_batch(texts, [QUERY] * len(texts), index)
    one = [score_completion(t, QUERY, index) for t in texts]
    np.testing.assert_allclose(batch["reward"], [p.total for p in one])
    np.testing.assert_allclose(batch["pas"], [p.pas for p in one])
    assert batch["correct"].tolist() == [p.correct for p in one]


# ------------------------------------------------------------------ token offsets
def _offsets_by_definition(tok, ids, text) -> list[tuple[int, int]]:
    """Token t starts where the decoded prefix ids[:t] stops agreeing with the text."""
    starts = []
    for t in range(len(ids)):
        prefix = tok.decode(ids[:t], skip_special_tokens=True)
        n = 0
        while n < min(len(prefix), len(text)) and prefix[n] == text[n]:
            n += 1
        starts.append(n)
    return list(zip(starts, [*starts[1:], len(text)][: len(starts)], strict=True))


def _tokenizers() -> dict[str, object]:
    from tokenizers import decoders
    from transformers import PreTrainedTokenizerFast

    from tests.fixtures.tiny_llm import train_tokenizer

    corpus = ["Amélie (2001) is a comedy", "Léon: The Professional", "日本 映画", "naïve café"]
    byte_level = train_tokenizer(corpus * 20, vocab_size=300)
    # a SentencePiece-style tokenizer: decoding one token alone drops its leading space, so
    # the pieces do not add up to the text and token_offsets takes its exact slow path
    meta = Tokenizer(models.BPE(unk_token="<unk>"))
    meta.pre_tokenizer = pre_tokenizers.Metaspace()
    meta.decoder = decoders.Metaspace()
    trainer = __import__("tokenizers").trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>"], initial_alphabet=list("▁abcdeéilnortxyz日本 ")
    )
    meta.train_from_iterator(corpus * 20, trainer=trainer)
    metaspace = PreTrainedTokenizerFast(tokenizer_object=meta, unk_token="<unk>")
    return {"byte-level": byte_level, "metaspace": metaspace}


TOKENIZERS: dict[str, object] = {}


@pytest.mark.parametrize("kind", ["byte-level", "metaspace"])
@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="aéi lnot日本映画🎬xyz\n", max_size=40),
    cut=st.integers(min_value=0, max_value=3),
)
def test_token_offsets_follow_their_definition(kind: str, text: str, cut: int) -> None:
    from stages.rl.raae import token_offsets

    tok = TOKENIZERS.setdefault(kind, None) or TOKENIZERS.update(_tokenizers()) or TOKENIZERS[kind]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ids = ids[: max(len(ids) - cut, 0)]  # a completion cut mid-character at the token limit
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert token_offsets(tok, ids, decoded) == _offsets_by_definition(tok, ids, decoded)


def test_batch_scorer_scores_each_new_batch_once_and_never_a_stale_one(index) -> None:
    """TRL calls every reward function with the same completions list; each new list is scored
    anew, even one that CPython puts at a freed list's address (ids are reused)."""
    from stages.rl.scoring import BatchScorer

    scorer = BatchScorer(index, RewardWeights())
    columns = {
        "query_id": ["q1"] * 2,
        "family": ["simple"] * 2,
        "candidate_item_ids": [QUERY["candidate_item_ids"]] * 2,
        "candidate_titles": [QUERY["candidate_titles"]] * 2,
        "positive_item_ids": [QUERY["positive_item_ids"]] * 2,
    }
    fmt, correct = scorer.component("format"), scorer.component("correct")
    for step, title in enumerate(["Heat", "Bananas", "Sleeper", "Bananas", "Heat"]):
        completions = [[{"role": "assistant", "content": f"\\boxed{{{title}}}"}] for _ in "ab"]
        assert fmt([], completions, **columns) == [0.5, 0.5]
        seconds = scorer.seconds
        assert correct([], completions, **columns) == [float(title == "Bananas")] * 2, step
        assert scorer.seconds == seconds  # the second component reused the first one's scores
        assert scorer.last["texts"] == [f"\\boxed{{{title}}}"] * 2
        del completions  # its address is free for the next step's list
