"""The reward side of `rerec train`: TRL reward functions, one per component, all served by
one vectorised `score_batch` call per batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from stages.rewards.dual_graph import RewardIndex, RewardWeights, score_batch
from stages.rl.config import TrainConfig
from stages.rl.inputs import QUERY_COLUMNS


def reward_weights(cfg: TrainConfig) -> RewardWeights:
    return RewardWeights(
        w_format=cfg.w_format,
        w_ndcg=1.0,
        w_qas=cfg.w_qas if cfg.use_qas else 0.0,
        w_pas=cfg.w_pas if cfg.use_pas else 0.0,
        k=cfg.k,
        fuzzy_threshold=cfg.fuzzy_threshold,
    )


def completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return ""


class BatchScorer:
    """Scores a batch once (all components, vectorised) for the reward functions TRL calls one
    after the other with the same completions list."""

    def __init__(self, index: RewardIndex, weights: RewardWeights):
        self.index, self.weights = index, weights
        # The completions list last scored, held so that it stays alive: a list's id() is
        # reused once the list is freed, so a key of (id, length) handed a step the previous
        # step's scores when the new list landed at the old one's address.
        self._scored: Sequence[Any] | None = None
        self.last: dict[str, Any] = {}
        self.seconds = 0.0  # spent scoring, for the step-overhead benchmark

    def score(self, completions: Sequence[Any], **columns: Any) -> dict[str, Any]:
        if completions is not self._scored:
            started = time.perf_counter()
            texts = [completion_text(c) for c in completions]
            queries = [{c: columns[c][i] for c in QUERY_COLUMNS} for i in range(len(completions))]
            parts = score_batch(texts, queries, self.index, self.weights)
            parts["texts"] = texts
            parts["queries"] = queries
            self.last, self._scored = parts, completions
            self.seconds += time.perf_counter() - started
        return self.last

    def component(self, name: str) -> Callable[..., list[float]]:
        def reward(prompts, completions, **kwargs) -> list[float]:
            return self.score(completions, **kwargs)[name].tolist()

        reward.__name__ = name
        return reward


def reward_functions(scorer: BatchScorer, cfg: TrainConfig) -> tuple[list, list[float]]:
    w = scorer.weights
    funcs, weights = [scorer.component("format"), scorer.component("ndcg")], [w.w_format, 1.0]
    if cfg.use_qas:
        funcs.append(scorer.component("qas"))
        weights.append(w.w_qas)
    if cfg.use_pas:
        funcs.append(scorer.component("pas"))
        weights.append(w.w_pas)
    return funcs, weights
