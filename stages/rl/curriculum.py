"""Online curriculum: reorder (and thin) the training queries at the start of every epoch.

Each query's difficulty is the mean of (1 - ndcg) over its G rollouts in the previous epoch
(or the mean of 1 - normalised reward). Queries below `tau` are mastered and dropped; the rest
are ordered easy to hard. Queries without rollouts yet keep their last estimate, or count as
0.5 when they have none. If fewer than `min_keep` survive, the whole set is used (still ordered).
The estimate reuses the rollouts GRPO makes anyway: it costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import polars as pl

UNKNOWN = 0.5


def difficulties(rollouts: pl.DataFrame, metric: str = "ndcg") -> pl.DataFrame:
    """``query_id, difficulty`` from one epoch's rollouts (columns query_id and ``metric``;
    for "reward" the rewards are min-max normalised over the epoch first)."""
    value = pl.col(metric).cast(pl.Float64)
    if metric == "reward":
        lo, hi = value.min(), value.max()
        value = pl.when(hi > lo).then((value - lo) / (hi - lo)).otherwise(0.5)
    return rollouts.group_by("query_id").agg(difficulty=(1.0 - value).mean()).sort("query_id")


def curriculum_order(
    query_ids: Sequence[str],
    difficulty: dict[str, float],
    *,
    tau: float = 0.1,
    min_keep: int = 1,
) -> tuple[list[str], bool]:
    """Queries to train on this epoch, easiest first, and whether the fallback kicked in.
    Ties keep the dataset order (a stable sort), so the order is deterministic."""
    scored = [(difficulty.get(q, UNKNOWN), n, q) for n, q in enumerate(query_ids)]
    kept = [s for s in scored if s[0] >= tau]
    fallback = len(kept) < min_keep
    if fallback:
        kept = scored
    kept.sort(key=lambda s: (s[0], s[1]))
    return [q for _, _, q in kept], fallback


class CurriculumSampler:
    """Yields dataset indices in curriculum order; `set_epoch` (called by the schedule) applies
    the difficulties recorded for the previous epoch. Its state is a plain dict, saved with
    checkpoints, so a resumed run sees the same order."""

    def __init__(
        self,
        query_ids: Sequence[str],
        *,
        tau: float = 0.1,
        min_keep: int = 1,
        enabled: bool = True,
        seed: int = 0,
    ):
        self.query_ids = list(query_ids)
        self.tau, self.min_keep, self.enabled, self.seed = tau, min_keep, enabled, seed
        self.difficulty: dict[str, float] = {}
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self._order = self._initial_order()

    def _initial_order(self) -> list[int]:
        # Epoch 0 has no estimate: a seeded shuffle.
        return list(np.random.default_rng(self.seed).permutation(len(self.query_ids)))

    def record(self, rollouts: pl.DataFrame, metric: str = "ndcg") -> None:
        """Fold one epoch's rollouts into the difficulty estimates."""
        for qid, d in difficulties(rollouts, metric).iter_rows():
            self.difficulty[qid] = float(d)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if not self.enabled or epoch == 0:
            self._order = (
                self._initial_order()
                if epoch == 0
                else list(np.random.default_rng(self.seed + epoch).permutation(len(self.query_ids)))
            )
            return
        ordered, fallback = curriculum_order(
            self.query_ids, self.difficulty, tau=self.tau, min_keep=self.min_keep
        )
        position = {q: n for n, q in enumerate(self.query_ids)}
        self._order = [position[q] for q in ordered]
        self.history.append({"epoch": epoch, "kept": len(ordered), "fallback": fallback})

    @property
    def order(self) -> list[int]:
        """This epoch's query positions, in the order they are handed out (a copy)."""
        return list(self._order)

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "difficulty": dict(self.difficulty),
            "history": list(self.history),
            "order": list(map(int, self._order)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.difficulty = {str(k): float(v) for k, v in state["difficulty"].items()}
        self.history = list(state["history"])
        self._order = [int(i) for i in state["order"]]


class CurriculumSchedule:
    """Hands the trainer one step's queries at a time, at generation time.

    Picking the queries when they are generated (rather than when a data loader prefetches
    them) means every rollout of epoch e is scored before epoch e+1 is ordered, whatever the
    loader's look-ahead, and the schedule's state is exactly what a checkpoint needs. An epoch
    is a pass over the sampler's order in chunks of ``per_step`` queries; a last, short chunk is
    topped up from the start of the same epoch's order (its easiest queries)."""

    def __init__(self, sampler: CurriculumSampler, per_step: int, metric: str = "ndcg"):
        self.sampler, self.per_step, self.metric = sampler, per_step, metric
        self.position = 0  # queries of the current epoch's order already handed out
        self.chunks = 0  # steps' worth of queries handed out in total
        self.pending: list[dict[str, Any]] = []  # rollouts of the current epoch
        self.table: list[dict[str, Any]] = []  # curriculum rows, one per query and epoch >= 1

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def next_chunk(self) -> list[int]:
        order = self.sampler.order
        if self.position >= len(order):
            self._start_epoch(self.sampler.epoch + 1)
            order = self.sampler.order
        chunk = order[self.position : self.position + self.per_step]
        self.position += self.per_step
        while len(chunk) < self.per_step:  # short last chunk: top up from the easiest
            chunk = chunk + order[: self.per_step - len(chunk)]
        self.chunks += 1
        return [int(i) for i in chunk]

    def epoch_done(self) -> bool:
        """The chunk handed out last was the end of its epoch."""
        return self.position >= len(self.sampler.order)

    def record(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rollouts of the last chunk (query_id and the difficulty metric)."""
        self.pending.extend(rows)

    def _start_epoch(self, epoch: int) -> None:
        if self.pending:
            self.sampler.record(pl.DataFrame(self.pending), self.metric)
        self.pending = []
        self.sampler.set_epoch(epoch)
        self.position = 0
        if not self.sampler.enabled:
            return
        fallback = bool(self.sampler.history[-1]["fallback"])
        position = {q: n for n, q in enumerate(self.sampler.order)}
        for n, qid in enumerate(self.sampler.query_ids):
            self.table.append(
                {
                    "epoch": epoch,
                    "query_id": qid,
                    "difficulty": self.sampler.difficulty.get(qid, UNKNOWN),
                    "kept": n in position,
                    "position": position.get(n),
                    "fallback": fallback,
                }
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "position": self.position,
            "chunks": self.chunks,
            "pending": list(self.pending),
            "table": list(self.table),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.position = int(state["position"])
        self.chunks = int(state["chunks"])
        self.pending = list(state["pending"])
        self.table = list(state["table"])
