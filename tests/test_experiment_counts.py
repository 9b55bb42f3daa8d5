"""The experiment's answer and prompt-group counts (benchmarks/experiment.py), checked against
counts made by hand on toy predictions and rollouts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("experiment", ROOT / "benchmarks/experiment.py")
experiment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(experiment)


def test_answer_counts_per_family_and_over_all() -> None:
    predictions = pl.DataFrame(
        {
            "family": ["simple", "simple", "simple", "interest", "interest"],
            # boxed and right; boxed, a non-candidate; no box; boxed, wrong candidate; boxed,
            # a non-candidate (the format term is +0.05 with a box, -0.05 without)
            "format": [0.05, 0.05, -0.05, 0.05, 0.05],
            "predicted_item_ids": [[3], [], [], [7], []],
            "correct": [True, False, False, False, False],
        },
        schema_overrides={"predicted_item_ids": pl.List(pl.Int64)},
    )
    assert experiment.answer_counts(predictions) == {
        "interest": {"n": 2, "boxed": 2, "candidate": 1, "correct": 0},
        "simple": {"n": 3, "boxed": 2, "candidate": 1, "correct": 1},
        "all": {"n": 5, "boxed": 4, "candidate": 2, "correct": 1},
    }


def test_group_counts_per_family_and_over_all() -> None:
    def group(step: int, query: str, family: str, rewards: list[float], right: list[bool]):
        return [
            {"step": step, "query_id": query, "family": family, "reward": r, "correct": c}
            for r, c in zip(rewards, right, strict=True)
        ]

    rollouts = pl.DataFrame(
        group(1, "q1", "simple", [1.1, 0.1, 0.1, 0.1], [True, False, False, False])  # mixed
        + group(1, "q2", "interest", [0.1, 0.1, 0.1, 0.1], [False] * 4)  # no spread
        + group(2, "q3", "interest", [0.3, 0.1, 0.1, 0.1], [False] * 4)  # spread, all wrong
        + group(2, "q1", "simple", [1.1, 1.1, 1.1, 1.1], [True] * 4)  # all right: no spread
    )
    assert experiment.group_counts(rollouts) == {
        "interest": {"groups": 2, "spread": 1, "mixed": 0, "all_right": 0, "all_wrong": 2},
        "simple": {"groups": 2, "spread": 1, "mixed": 1, "all_right": 1, "all_wrong": 0},
        "all": {"groups": 4, "spread": 2, "mixed": 1, "all_right": 1, "all_wrong": 2},
    }
