"""The experiment's answer and prompt-group counts (benchmarks/experiment.py), checked against
counts made by hand on toy predictions and rollouts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest

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


def test_plan_lets_a_run_override_the_shared_rl_options_and_pairs_it_with_its_grpo() -> None:
    cfg = {
        "test_queries": 5,
        "sft": {"steps": 2},
        "rl": {"steps": 16, "micro_batch": 2, "lr": 5e-5},
        "runs": {
            "sft-grpo": {"algo": "grpo"},
            "sft-rerec": {"algo": "rerec"},
            "sft-rerec-48": {"algo": "rerec", "steps": 48, "micro_batch": 8},
            "sft-grpo-48": {"algo": "grpo", "steps": 48, "micro_batch": 8},
            "sft-rerec-48-s1": {"algo": "rerec", "steps": 48, "micro_batch": 8, "seed": 1},
        },
        "main_runs": 2,
        "grpo_of": {"sft-rerec-48": "sft-grpo-48", "sft-rerec-48-s1": "sft-grpo-48"},
        "paired": [["sft-rerec-48", "sft-rerec"]],
    }
    steps = experiment.plan(cfg, None)
    train = {s[s.index("--output") + 1]: s for s in steps if s[0] == "train"}
    long = train["policy-sft-rerec-48"]
    assert long.count("--steps") == long.count("--micro-batch") == 1  # overridden, not repeated
    assert long[long.index("--steps") + 1] == "48" and "8" == long[long.index("--micro-batch") + 1]
    short = train["policy-sft-rerec"]
    assert short[short.index("--steps") + 1] == "16"
    assert short[short.index("--seed") + 1] == "0"
    # a run may name its own RL seed (from the same sft): given once, in place of the shared one
    second = train["policy-sft-rerec-48-s1"]
    assert second.count("--seed") == 1 and second[second.index("--seed") + 1] == "1"
    assert second[second.index("--model") + 1] == "sft"
    # the base model's eval comes after the first `main_runs` RL runs and their evals
    outputs = [s[s.index("--output") + 1] if "--output" in s else s[2] for s in steps]
    assert outputs.index("smollm2-135m") == outputs.index("eval-sft-rerec") + 1
    assert experiment.comparisons(cfg) == [
        ("paired_vs_sft", "sft-grpo", "sft"),
        ("paired_vs_sft", "sft-rerec", "sft"),
        ("paired_vs_sft", "sft-rerec-48", "sft"),
        ("paired_vs_sft", "sft-grpo-48", "sft"),
        ("paired_vs_sft", "sft-rerec-48-s1", "sft"),
        ("paired_vs_grpo", "sft-rerec", "sft-grpo"),
        ("paired_vs_grpo", "sft-rerec-48", "sft-grpo-48"),
        ("paired_vs_grpo", "sft-rerec-48-s1", "sft-grpo-48"),
        ("paired_other", "sft-rerec-48", "sft-rerec"),
    ]
    res = {"steps": 16, "run_steps": {"sft-rerec": 16, "sft-rerec-48": 48, "sft-grpo-48": 48}}
    assert experiment.rl_steps_text(res) == "16 steps (sft-rerec-48, sft-grpo-48: 48)"
    assert experiment.rl_steps_text({"steps": 16}) == "16 steps"


def test_plan_only_runs_what_it_names_and_refuses_unknown_names() -> None:
    cfg = {
        "test_queries": 5,
        "prepare": [["make-queries"]],
        "baselines": ["popular"],
        "sft": {"steps": 2},
        "rl": {"steps": 16},
        "runs": {"sft-grpo": {"algo": "grpo"}, "sft-rerec": {"algo": "rerec"}},
    }

    def what(only):
        return [s[s.index("--output") + 1] if "--output" in s else s[0] for s in
                experiment.plan(cfg, only)]  # fmt: skip

    data = ["make-queries", "eval", "eval"]  # the data, the baseline; the base model last
    assert what(["base"]) == data
    assert what(["sft"]) == data[:2] + ["sft", "eval-sft"]
    with_run = what(["sft-rerec"])  # an RL run brings its sft, not the other runs
    assert with_run == data[:2] + ["sft", "eval-sft", "policy-sft-rerec", "eval-sft-rerec"]
    assert len(what(None)) == len(what(["base", "sft-grpo", "sft-rerec"])) == 9
    with pytest.raises(ValueError, match="--only sft-ppo: not in the config"):
        experiment.plan(cfg, ["sft-ppo"])
