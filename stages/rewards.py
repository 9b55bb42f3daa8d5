"""Dual-graph rewards for recommendation completions, computed in process.

    r = w_format * format + NDCG@K + w1 * QAS + w2 * PAS

- format: +0.5 when the completion has a `\\boxed{...}`, -0.5 when it has none (as in the
  authors' release); scaled by `w_format`.
- NDCG@K: the answer is the first `\\boxed{...}`, K titles separated by ";"; each is resolved to
  a candidate (`CandidateIndex.resolve`: a bare candidate number; else, with list markers and
  quotes stripped, a normalised exact title or alternate title of a candidate whose year is
  within ±1 of the answer's; else a fuzzy match above `fuzzy_threshold` among those candidates).
  With one positive at rank r among the resolved, distinct predictions, NDCG@K = 1 / log2(r + 1)
  (0 when absent).
- QAS (query alignment, item-attribute graph): |A(p) ∩ A(gt)| / |A(gt)| for the first predicted
  item p, where A(gt) is the set of attributes all ground-truth items share.
- PAS (preference alignment, user-item graph): cosine of the LightGCN embeddings of p and the
  ground truth (mean over several ground-truth items).

Default weights: w_format 0.1, w1 0.2, w2 0.1. A wrong but sensible answer earns at most
0.2 + 0.1 = 0.3 from the dense terms, far below the 1.0 of a right answer, so the right answer
always wins within a group; yet when all G rollouts of a group are wrong (most groups early in
training of a small model), the dense terms still rank them, which exact match alone cannot.
The release's 0.01 weights leave the dense terms below the noise of the format term.

Nothing here raises on any completion string: malformed answers score as unresolved.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from stages.film_facts import normalise_title_str

_BOX = "\\boxed{"
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_NUMBER = re.compile(r"^\s*(?:#|no\.?\s*|candidate\s*)?(\d{1,3})\s*[.)]?\s*$", re.IGNORECASE)
_ANSWER_YEAR = re.compile(r"\s*[(\[]\s*(\d{4})\s*[)\]]\s*$")
# A leading list marker: "4.", "4)", "4:", "#4", "candidate 4:", "-", "*", "•" (not "12 Angry").
_MARKER = re.compile(
    r"^(?:(?:candidate\s*|no\.?\s*)?#?\s*\d{1,3}\s*[.):](?!\d)|#\s*\d{1,3}\s|[-*•·–—+>]+)\s*",
    re.IGNORECASE,
)
_EDGES = " \t\r\n'\"“”‘’„«»`*_•·.,;:!"  # quotes, emphasis, trailing punctuation
_AKA = re.compile(r"^(?:a\.?k\.?a\.?|aka)\s+", re.IGNORECASE)
# Parentheses of book titles that are not another title: "(Paperback)", "(Book 2)", ...
_BIBLIO = re.compile(
    r"\b(?:paperback|hardcover|hardback|mass market|edition|book club|audio|cassette|series"
    r"|vol|volume|book \d+|backlist|library|reprint|unabridged|abridged)\b"
)
_SUBTITLE = re.compile(r"(?:\s+or)?\s*:\s+|\s+[-–—]\s+")


@dataclass(frozen=True)
class RewardWeights:
    w_format: float = 0.1
    w_ndcg: float = 1.0
    w_qas: float = 0.2
    w_pas: float = 0.1
    k: int = 1
    fuzzy_threshold: float = 85.0


def parse_boxed(completion: str) -> list[str] | None:
    """Titles in the first ``\\boxed{...}`` (braces may nest), split on ";"; None: no box."""
    if not isinstance(completion, str):
        return None
    start = completion.find(_BOX)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOX)
    while i < len(completion) and depth:
        ch = completion[i]
        depth += 1 if ch == "{" else -1 if ch == "}" else 0
        i += 1
    if depth:
        return None  # an unclosed box is not an answer
    inner = completion[start + len(_BOX) : i - 1]
    return [part.strip() for part in inner.split(";") if part.strip()]


def title_key(title: str) -> str:
    """Normalised title without a trailing year: case, accents, articles, punctuation folded."""
    return normalise_title_str(_YEAR.sub("", title))


def title_keys(titles: Sequence[str]) -> list[str]:
    return [title_key(t) for t in titles]


def _split_parentheticals(title: str) -> tuple[str, list[str]]:
    """'Thieves (Voleurs, Les)' -> ('Thieves', ['Voleurs, Les']): the trailing balanced groups,
    outermost only ('X (Harry Potter (Paperback))' -> ('X', ['Harry Potter (Paperback)']))."""
    groups: list[str] = []
    t = title.rstrip()
    while t.endswith(")"):
        depth, start = 0, -1
        for i in range(len(t) - 1, -1, -1):
            if t[i] == ")":
                depth += 1
            elif t[i] == "(":
                depth -= 1
                if depth == 0:
                    start = i
                    break
        if start < 0:
            break  # unbalanced: leave the title whole
        groups.append(t[start + 1 : -1])
        t = t[:start].rstrip()
    return t, groups[::-1]


@functools.lru_cache(maxsize=65536)
def _title_variants(title: str) -> tuple[tuple[str, int], ...]:
    """Normalised keys of one title (its year removed), each with a rank: 0 the whole title and
    the title without its trailing parentheses; 1 each alternate title in them ("Voleurs, Les" ->
    "les voleurs", "a.k.a." dropped, edition and series markers skipped); 2 the title before a
    subtitle ("Star Wars: Episode IV - A New Hope" -> "star wars"). A key keeps its lowest rank."""
    keys: dict[str, int] = {}

    def add(text: str, rank: int) -> None:
        key = normalise_title_str(text)
        if key and key not in keys:
            keys[key] = rank

    add(title, 0)
    main, groups = _split_parentheticals(title)
    add(main, 0)
    for group in groups:
        alternate = _AKA.sub("", group.strip())
        key = normalise_title_str(alternate)
        if len(key) >= 2 and not key.isdigit() and not _BIBLIO.search(key):
            add(alternate, 1)
    head = _SUBTITLE.split(main, maxsplit=1)
    if len(head) == 2 and len(key := normalise_title_str(head[0])) >= 3 and not key.isdigit():
        add(head[0], 2)
    return tuple(keys.items())


def _clean(text: str) -> str:
    return html.unescape(text).replace("**", "").strip(_EDGES)


def _split_year(text: str) -> tuple[int | None, str]:
    m = _ANSWER_YEAR.search(text)
    return (int(m.group(1)), text[: m.start()].strip(_EDGES)) if m else (None, text)


class _Answer(NamedTuple):
    number: int | None  # "3", "#3", "candidate 3": a candidate position, 1-based
    year: int | None
    keys: tuple[tuple[str, int], ...]  # normalised key, 0 title / 1 alternate / 2 before subtitle
    fuzzy: tuple[str, ...]  # keys tried by fuzzy matching


@functools.lru_cache(maxsize=65536)
def _parse_answer(answer: str) -> _Answer:
    """Quotes, markdown bold and a leading list marker stripped ("4. 'Heat' (1995)" -> "Heat",
    1995); the keys of the text with the marker come last, in case it is part of the title."""
    text = _clean(answer)
    m = _NUMBER.match(text)
    if m:
        return _Answer(int(m.group(1)), None, (), ())
    bare = _clean(_MARKER.sub("", text, count=1))
    year, rest = _split_year(bare)
    variants = _title_variants(rest)
    keys: dict[str, int] = {}
    for key, kind in variants:
        if kind < 2 or year is not None:  # dropping a subtitle needs the year to agree
            keys.setdefault(key, kind)
    if bare != text:
        for key, kind in _title_variants(_split_year(text)[1]):
            if kind < 2:
                keys.setdefault(key, kind)
    return _Answer(None, year, tuple(keys.items()), tuple(k for k, r in variants if r == 0))


@functools.lru_cache(maxsize=65536)
def _parse_candidate(title: str) -> tuple[int | None, tuple[tuple[str, int], ...]]:
    year, rest = _split_year(html.unescape(title).strip())
    return year, _title_variants(rest)


def _numbers(key: str) -> list[str]:
    return [t for t in key.split() if t.isdigit()]


@dataclass
class CandidateIndex:
    """How the answer strings of one query are resolved to its candidates.

    In order: a bare number is a candidate position; then an exact normalised key (whole title,
    title without its parentheses, each alternate title in them, or the title before a subtitle)
    of a candidate whose year is within ±1 of the answer's (when both give one), the nearest
    year first; then a fuzzy match (`fuzz.ratio` >= threshold) among the candidates whose year
    is within ±1, with the same numbers in both titles ("RoboCop" is not "Robocop 3")."""

    item_ids: list[int]
    keys: dict[str, list[tuple[int, int]]]  # normalised key -> [(rank, candidate position)]
    years: list[int | None]
    _fuzzy: dict[int | None, tuple[list[str], list[int]]] = field(default_factory=dict)

    @classmethod
    def build(cls, item_ids: Sequence[int], titles: Sequence[str]) -> CandidateIndex:
        keys: dict[str, list[tuple[int, int]]] = {}
        years: list[int | None] = []
        for pos, title in enumerate(titles):
            year, variants = _parse_candidate(title)
            years.append(year)
            for key, rank in variants:
                keys.setdefault(key, []).append((rank, pos))
        return cls(list(item_ids), keys, years)

    def _fuzzy_choices(self, year: int | None) -> tuple[list[str], list[int]]:
        """Keys (titles and alternates) of the candidates whose year fits, and their positions."""
        got = self._fuzzy.get(year)
        if got is None:
            choices: list[str] = []
            positions: list[int] = []
            for key, entries in self.keys.items():
                if len(key) < 3:
                    continue
                for rank, pos in entries:
                    y = self.years[pos]
                    if rank < 2 and (year is None or y is None or abs(year - y) <= 1):
                        choices.append(key)
                        positions.append(pos)
            got = self._fuzzy[year] = (choices, positions)
        return got

    def resolve(self, answer: str, threshold: float) -> int | None:
        """Candidate position of one answer string, or None."""
        parsed = _parse_answer(answer)
        if parsed.number is not None:
            n = parsed.number
            return n - 1 if 1 <= n <= len(self.item_ids) else None
        year = parsed.year
        for key, kind in parsed.keys:
            entries = self.keys.get(key)
            if not entries:
                continue
            best: tuple[int, int, int] | None = None
            for rank, pos in entries:
                y = self.years[pos]
                dated = year is not None and y is not None
                if dated and abs(year - y) > 1:
                    continue
                if rank == 2 and (
                    kind == 2  # both sides cut at a subtitle: too loose
                    or not (dated or (len(entries) == 1 and " " in key))
                ):
                    continue
                score = (abs(year - y) if dated else 0, rank, pos)
                if best is None or score < best:
                    best = score
            if best is not None:
                return best[2]
        choices, positions = self._fuzzy_choices(year)
        for key in parsed.fuzzy:
            for choice, _, i in process.extract(
                key, choices, scorer=fuzz.ratio, score_cutoff=threshold, limit=3
            ):
                if _numbers(choice) == _numbers(key):
                    return positions[i]
        return None


@dataclass
class RewardIndex:
    """Item attributes (for QAS) and normalised LightGCN item embeddings (for PAS)."""

    item_attrs: dict[int, frozenset[int]]
    embeddings: np.ndarray | None = None  # (n_items, d), rows L2-normalised
    _candidates: dict[str, CandidateIndex] = field(default_factory=dict)

    @classmethod
    def from_tables(
        cls, item_attributes: pl.DataFrame, item_embeddings: pl.DataFrame | None = None
    ) -> RewardIndex:
        grouped = item_attributes.group_by("item_id").agg(pl.col("attr_id"))
        attrs = {int(i): frozenset(a) for i, a in grouped.iter_rows()}
        emb = None
        if item_embeddings is not None and item_embeddings.height:
            ordered = item_embeddings.sort("item_id")
            emb = np.zeros(
                (int(ordered["item_id"].max()) + 1, ordered["embedding"].dtype.size),
                dtype=np.float32,
            )
            emb[ordered["item_id"].to_numpy()] = ordered["embedding"].to_numpy()
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = emb / np.where(norms == 0, 1.0, norms)
        return cls(attrs, emb)

    def candidates(
        self, query_id: str, item_ids: Sequence[int], titles: Sequence[str]
    ) -> CandidateIndex:
        index = self._candidates.get(query_id)
        if index is None:
            index = self._candidates[query_id] = CandidateIndex.build(item_ids, titles)
        return index

    def qas(self, predicted: int, truth: Sequence[int]) -> float:
        shared: frozenset[int] | None = None
        for t in truth:
            attrs = self.item_attrs.get(t, frozenset())
            shared = attrs if shared is None else shared & attrs
        if not shared:
            return 0.0
        return len(self.item_attrs.get(predicted, frozenset()) & shared) / len(shared)

    def pas(self, predicted: int, truth: Sequence[int]) -> float:
        if self.embeddings is None or predicted >= len(self.embeddings):
            return 0.0
        rows = [t for t in truth if t < len(self.embeddings)]
        if not rows:
            return 0.0
        return float((self.embeddings[rows] @ self.embeddings[predicted]).mean())


@dataclass(frozen=True)
class RewardParts:
    total: float
    format: float
    ndcg: float
    qas: float
    pas: float
    predicted: tuple[int, ...]  # resolved item ids, in answer order, distinct
    correct: bool  # the first prediction is a ground-truth item


def _resolve(
    completion: str, query: Mapping, index: RewardIndex, weights: RewardWeights
) -> tuple[float, list[int], float, float]:
    """format, predicted items, NDCG@K and QAS of one completion (PAS is batched apart)."""
    answers = parse_boxed(completion)
    fmt = 0.5 if answers is not None else -0.5
    cand = index.candidates(
        str(query["query_id"]), query["candidate_item_ids"], query["candidate_titles"]
    )
    predicted: list[int] = []
    for answer in (answers or [])[: max(weights.k, 1) * 2]:
        pos = cand.resolve(answer, weights.fuzzy_threshold)
        if pos is not None and cand.item_ids[pos] not in predicted:
            predicted.append(cand.item_ids[pos])
        if len(predicted) == weights.k:
            break
    truth = query["positive_item_ids"]
    ndcg = 0.0
    for rank, item in enumerate(predicted[: weights.k], start=1):
        if item in truth:
            ndcg = 1.0 / math.log2(rank + 1)
            break
    qas = index.qas(predicted[0], truth) if predicted else 0.0
    return fmt, predicted, ndcg, qas


def _total(weights: RewardWeights, fmt, ndcg, qas, pas):
    return (
        weights.w_format * fmt + weights.w_ndcg * ndcg + weights.w_qas * qas + weights.w_pas * pas
    )


def score_completion(
    completion: str,
    query: Mapping,
    index: RewardIndex,
    weights: RewardWeights = RewardWeights(),
) -> RewardParts:
    """Reward of one completion for one query row (`queries` artifact columns)."""
    fmt, predicted, ndcg, qas = _resolve(completion, query, index, weights)
    truth = list(query["positive_item_ids"])
    pas = index.pas(predicted[0], truth) if predicted else 0.0
    return RewardParts(
        _total(weights, fmt, ndcg, qas, pas),
        fmt,
        ndcg,
        qas,
        pas,
        tuple(predicted),
        bool(predicted) and predicted[0] in truth,
    )


def score_batch(
    completions: Sequence[str],
    queries: Sequence[Mapping],
    index: RewardIndex,
    weights: RewardWeights = RewardWeights(),
) -> dict[str, np.ndarray]:
    """Rewards and each component for a batch (completion i answers queries[i]); PAS is one
    gathered dot product for the whole batch (first ground truth when there are several)."""
    n = len(completions)
    fmt, ndcg, qas = np.empty(n), np.empty(n), np.empty(n)
    pred = np.full(n, -1, dtype=np.int64)
    truth = np.empty(n, dtype=np.int64)
    correct = np.zeros(n, dtype=bool)
    predicted: list[list[int]] = []
    for i, (c, q) in enumerate(zip(completions, queries, strict=True)):
        f, p, g, a = _resolve(c, q, index, weights)
        fmt[i], ndcg[i], qas[i] = f, g, a
        predicted.append(p)
        truth[i] = q["positive_item_ids"][0]
        if p:
            pred[i] = p[0]
            correct[i] = p[0] in q["positive_item_ids"]
    pas = np.zeros(n)
    emb = index.embeddings
    if emb is not None:
        ok = (pred >= 0) & (pred < len(emb)) & (truth < len(emb))
        pas[ok] = np.einsum("ij,ij->i", emb[pred[ok]], emb[truth[ok]])
    return {
        "reward": _total(weights, fmt, ndcg, qas, pas),
        "format": fmt,
        "ndcg": ndcg,
        "qas": qas,
        "pas": pas,
        "correct": correct,
        "pred": pred,  # first resolved item id, -1 when none
        "predicted": predicted,  # every resolved item id, in answer order
    }
