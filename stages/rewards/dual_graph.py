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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from stages.llm.answers import CandidateIndex, parse_boxed


@dataclass(frozen=True)
class RewardWeights:
    w_format: float = 0.1
    w_ndcg: float = 1.0
    w_qas: float = 0.2
    w_pas: float = 0.1
    k: int = 1
    fuzzy_threshold: float = 85.0


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
