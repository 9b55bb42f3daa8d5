"""`rerec train`: every algorithm end to end on a tiny model, rewards and curriculum checked
against the rollouts, RAAE advantages token by token (also split over two processes), resume
equal to an uninterrupted run, clear errors, and a 2-process DDP run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.rl.config import TrainConfig
from tests.fixtures.cli import invoke
from tests.fixtures.workdirs import build_toy_workdir

# fp32: bf16 autocast (auto on an AVX512-BF16 CPU) pays off for real models, not tiny ones.
SMALL = dict(
    limit=4, prompts_per_step=2, num_generations=3, max_completion_length=48, epochs=2,
    precision="fp32",
)  # fmt: skip


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[ArtifactStore, Path]:
    return build_toy_workdir(tmp_path_factory.mktemp("train"))


def train(store, model, **kw):
    from stages.rl.stage import train_policy

    return train_policy(store, TrainConfig(model=str(model), **{**SMALL, **kw}))


@pytest.mark.parametrize("algo", ["rerec", "grpo", "reinforce++"])
def test_each_algorithm_trains_end_to_end(toy, algo) -> None:
    store, model = toy
    name = "policy-" + algo.replace("+", "p")
    art = train(store, model, algo=algo, output=name).artifact
    log, rollouts = art.read("log"), art.read("rollouts")
    assert log["step"].to_list() == [1, 2, 3, 4]
    assert log["epoch"].to_list() == [0, 0, 1, 1]
    assert rollouts.height == 4 * 2 * 3
    assert rollouts.group_by("step").len()["len"].to_list() == [6] * 4
    # each rollout keeps its text: the format term is whether that text holds a box
    from stages.llm.answers import parse_boxed

    boxed = [parse_boxed(t) is not None for t in rollouts["completion"]]
    assert boxed == (rollouts["format"] > 0).to_list()
    # every rollout's reward is the weighted sum of its parts, with the algorithm's weights
    w_qas, w_pas = (0.2, 0.1) if algo == "rerec" else (0.0, 0.0)
    expect = 0.1 * rollouts["format"] + rollouts["ndcg"] + w_qas * rollouts["qas"]
    np.testing.assert_allclose(rollouts["reward"], expect + w_pas * rollouts["pas"], atol=1e-9)
    # the step log is the mean of the step's rollouts
    per_step = rollouts.group_by("step").agg(pl.col("reward", "ndcg").mean()).sort("step")
    np.testing.assert_allclose(log["reward"], per_step["reward"], atol=1e-9)
    np.testing.assert_allclose(log["accuracy"], per_step["ndcg"], atol=1e-9)  # K = 1
    policy = json.loads(art.file("policy.json").read_text())
    assert policy["algo"] == algo and policy["adapter"] is True
    assert (art.file("model") / "adapter_model.safetensors").is_file()
    assert art.manifest.metrics["steps"] == 4
    assert not any((store.root / ".runs").glob(f"{name}-*")), "run folder left behind"
    if algo != "rerec":
        assert art.read("curriculum").height == 0  # no curriculum: plain reshuffles


def test_curriculum_follows_the_previous_epochs_rollouts(toy) -> None:
    store, model = toy
    art = train(store, model, tau=0.5, output="policy-curriculum").artifact
    rollouts, table = art.read("rollouts"), art.read("curriculum")
    first = rollouts.filter(pl.col("epoch") == 0)
    want = first.group_by("query_id").agg(d=1 - pl.col("ndcg").mean())
    got = table.join(want, on="query_id")
    assert got.height == 4
    np.testing.assert_allclose(got["difficulty"], got["d"], atol=1e-12)
    # tau 0.5 keeps the queries at least that hard; fewer than one step's prompts (min_keep)
    # falls back to all of them: which case this run is in follows from the difficulties
    hard_enough = table["difficulty"] >= 0.5
    fallback = int(hard_enough.sum()) < SMALL["prompts_per_step"]
    assert table["fallback"].to_list() == [fallback] * table.height
    assert table["kept"].to_list() == ([True] * table.height if fallback else hard_enough.to_list())
    kept = table.filter(pl.col("kept"))
    ordered = kept.sort("position")
    assert ordered["difficulty"].to_list() == sorted(ordered["difficulty"].to_list())
    # epoch 1 trains the kept queries, easy first (topped up from the start when short), one
    # step's prompts at a time, in the curriculum's order (a run once recorded a step's two
    # queries the other way round: the scorer had handed it the previous step's scores)
    second = rollouts.filter(pl.col("epoch") == 1)["query_id"].to_list()[::3]
    order = ordered["query_id"].to_list()
    n = min(len(order), len(second))
    assert second[:n] == order[:n]


def test_raae_advantages_token_by_token(toy) -> None:
    from transformers import AutoTokenizer

    from stages.rewards.dual_graph import RewardIndex, RewardWeights, score_batch
    from stages.rl.raae import raae_advantages, segment_spans, token_offsets

    _, model = toy
    tok = AutoTokenizer.from_pretrained(model)
    query = {
        "query_id": "q",
        "family": "simple",
        "candidate_item_ids": [1, 2, 3],
        "candidate_titles": ["Film 1 (1981)", "Film 2 (1992)", "Film 3 (1983)"],
        "positive_item_ids": [2],
    }
    texts = [
        "Film 3 looks right.\n\nFilm 3 (1983) is a comedy.\n\nSo \\boxed{Film 3 (1983)}",
        "Film 1 maybe.\n\n\\boxed{Film 2 (1992)}",
        "I am not sure.",
        "Film 1 (1981) is old.\nFilm 1 again.\n\\boxed{Film 1}",
    ]
    index = RewardIndex.from_tables(
        pl.DataFrame(
            {"item_id": [1, 2, 3], "attr_id": [7, 7, 8]},
            schema={"item_id": pl.Int32, "attr_id": pl.Int32},
        )
    )
    parts = score_batch(texts, [query] * 4, index, RewardWeights())
    parts["texts"], parts["queries"] = texts, [query] * 4
    eos = tok.eos_token_id
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
    T = max(map(len, rows)) + 2
    ids = torch.full((4, T), tok.pad_token_id)
    mask = torch.zeros(4, T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    r = parts["reward"]
    # by hand: 0 recommends Film 3 (wrong; QAS 0 as attr 8 != 7), segments 0 and 1 name it;
    # 1 is right (QAS 1); 2 has no box; 3 recommends Film 1 (wrong, QAS 1), lines 0 and 1 name it.
    assert parts["correct"].tolist() == [False, True, False, False]
    np.testing.assert_allclose(r, [0.05, 1.25, -0.05, 0.25])
    expected = []
    for i, text in enumerate(texts):
        row = rows[i]
        offsets = token_offsets(tok, row, tok.decode(row, skip_special_tokens=True))
        spans = segment_spans(text)
        penalised_segments = {0: {0, 1}, 1: set(), 2: set(), 3: {0, 1}}[i]
        low = r[i] - 0.3 * max(abs(r[i]), 0.1)
        values = []
        for start, _ in offsets:
            seg = (
                max(n for n, (a, _) in enumerate(spans) if a <= start)
                if start < len(text)
                else len(spans) - 1
            )
            values.append(low if seg in penalised_segments else r[i])
        expected.append(values)
    # per-token normalisation over the group's (all four) tokens
    pooled = np.concatenate(expected)
    want = [(np.array(v) - pooled.mean()) / (pooled.std() + 1e-4) for v in expected]
    adv, share = raae_advantages(
        tok,
        ids,
        mask,
        parts,
        torch.tensor(r),
        gather=lambda x: x,
        start=0,
        num_generations=4,
        w_penalty=0.3,
    )
    for i, w in enumerate(want):
        np.testing.assert_allclose(adv[i, : len(w)].numpy(), w, atol=1e-9)
        assert (adv[i, len(w) :] == 0).all()
    assert share == pytest.approx(
        sum(v != r[i] for i, e in enumerate(expected) for v in e) / len(pooled)
    )
    # the same group split over two processes gives the same advantages
    halves = [slice(0, 2), slice(2, 4)]
    sub = lambda s: {k: (v[s] if not isinstance(v, list) else v[s]) for k, v in parts.items()}  # noqa: E731
    sent = []
    for s in halves:
        raae_advantages(
            tok,
            ids[s],
            mask[s],
            sub(s),
            torch.tensor(r),
            gather=lambda x: sent.append(x) or torch.cat([x, x]),
            start=s.start,
            num_generations=4,
            w_penalty=0.3,
        )
    both = torch.cat(sent)
    split = torch.cat(
        [
            raae_advantages(
                tok,
                ids[s],
                mask[s],
                sub(s),
                torch.tensor(r),
                gather=lambda x: both,
                start=s.start,
                num_generations=4,
                w_penalty=0.3,
            )[0]
            for s in halves
        ]
    )
    torch.testing.assert_close(split, adv)


@pytest.mark.parametrize(
    "when",
    ["after step 2", "in step 3, rolled out, not trained", "in step 3, again after resuming"],
)
def test_resume_equals_an_uninterrupted_run(toy, when, monkeypatch) -> None:
    from stages.rl.stage import train_policy
    from stages.rl.trainer import RerecGRPOTrainer

    store, model = toy
    base = dict(model=str(model), **SMALL, save_steps=2, seed=7)
    whole = train_policy(store, TrainConfig(**base, output="policy-whole")).artifact

    def stop_at_two(row, total):
        if row["step"] == 2:
            raise KeyboardInterrupt

    scored = RerecGRPOTrainer._rerec_advantages

    def stop_in_three(self, output):
        scored(self, output)  # step 3's rollouts are recorded: then the kill comes
        if self.state.global_step == 2:
            raise KeyboardInterrupt

    on_step = None
    if when == "after step 2":
        on_step = stop_at_two
    else:
        monkeypatch.setattr(RerecGRPOTrainer, "_rerec_advantages", stop_in_three)
    output = "policy-resumed-" + "-".join(when.replace(",", "").split()[:4])
    cfg = TrainConfig(**base, output=output)
    with pytest.raises(UserError, match="interrupted at step 2; checkpoint saved"):
        train_policy(store, cfg, on_step=on_step)
    if when.endswith("again after resuming"):  # the checkpoint a resumed run saves is as good
        with pytest.raises(UserError, match="interrupted at step 2; checkpoint saved"):
            train_policy(store, cfg, resume=True)
    assert not (store.root / output).exists()
    monkeypatch.undo()
    resumed = train_policy(store, cfg, resume=True).artifact
    drop = ["seconds"]
    a, b = whole.read("log").drop(drop), resumed.read("log").drop(drop)
    assert a.equals(b), (a, b)
    assert whole.read("rollouts").equals(resumed.read("rollouts"))
    assert whole.read("curriculum").equals(resumed.read("curriculum"))
    wa = load_file(whole.file("model/adapter_model.safetensors"))
    wb = load_file(resumed.file("model/adapter_model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5)


def test_cli_trains_and_prints_the_curve(toy, monkeypatch) -> None:
    store, model = toy
    args = [
        "train",
        "--model",
        str(model),
        "--steps",
        "2",
        "--limit",
        "4",
        "--prompts-per-step",
        "2",
        "-G",
        "3",
        "--max-completion-length",
        "24",
        "--output",
        "policy-cli",
        "--quiet",
    ]
    result = invoke(store.root, monkeypatch, *args)
    assert result.exit_code == 0, result.output
    assert "training curve" in result.stdout and "policy-cli@" in result.stdout
    again = invoke(store.root, monkeypatch, *args)
    assert "already trained" in again.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--queries", "nope"], "no artifact 'nope'"),
        (["--cf", "cf-missing"], "PAS needs LightGCN embeddings: no artifact 'cf-missing'"),
        (["--algo", "grpo", "--no-raae"], "--no-raae only applies to --algo rerec"),
        (["--use-vllm"], "--use-vllm needs"),
        (["--micro-batch", "4"], "micro_batch 4 does not divide the 6 completions"),
        (["--resume"], "--resume: no checkpoint"),
        (["--trl", "num_iterations=2", "--resume"], "--resume cannot continue a run with"),
    ],
)
def test_bad_input_is_one_clear_line(toy, monkeypatch, args, message) -> None:
    store, model = toy
    base = [
        "train",
        "--model",
        str(model),
        "--steps",
        "1",
        "--limit",
        "4",
        "--prompts-per-step",
        "2",
        "-G",
        "3",
        "--output",
        "policy-bad",
        "--quiet",
    ]
    result = invoke(store.root, monkeypatch, *base, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (store.root / "policy-bad").exists()


def test_model_folder_without_config(toy, tmp_path) -> None:
    store, _ = toy
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no config.json"):
        train(store, tmp_path / "empty", output="policy-nomodel")


def test_two_process_ddp_gloo(toy, tmp_path) -> None:
    """Two CPU processes (gloo): each group of G = 4 spans both, so the group statistics and
    the curriculum go through `accelerator.gather`."""
    store, model = toy
    work = tmp_path / "workdir"
    shutil.copytree(
        store.root, work, symlinks=True, ignore=shutil.ignore_patterns("policy*", ".runs")
    )
    env = {**os.environ, "REREC_WORKDIR": str(work), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(Path(__file__).parents[1] / "configs/accelerate/cpu-ddp.yaml"),
        "-m",
        "rerec_cli",
        "train",
        "--model",
        str(model),
        "--limit",
        "4",
        "--epochs",
        "2",
        "--prompts-per-step",
        "1",
        "-G",
        "4",
        "--max-completion-length",
        "24",
        "--quiet",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    art = ArtifactStore(work).resolve("policy")
    rollouts = art.read("rollouts")
    assert rollouts.height == 8 * 4  # 4 queries x 2 epochs, G = 4, gathered from 2 processes
    assert (
        rollouts.group_by("step").agg(pl.col("query_id").n_unique())["query_id"].to_list()
        == [1] * 8
    )
    assert art.read("log").height == 8
    assert art.read("curriculum").height == 4


def test_full_fine_tuning_writes_a_loadable_model(toy) -> None:
    from stages.eval.config import EvalConfig
    from stages.eval.stage import evaluate

    store, model = toy
    art = train(store, model, lora=False, beta=0.0, steps=1, output="policy-full").artifact
    policy = json.loads(art.file("policy.json").read_text())
    assert policy["adapter"] is False
    assert (art.file("model") / "model.safetensors").is_file()
    assert not (art.file("model") / "adapter_config.json").exists()
    assert art.read("log")["kl"].is_null().all()  # beta 0: no reference pass, no KL
    result = evaluate(
        store, EvalConfig(policy="policy-full", max_new_tokens=4, limit=3, bootstrap=0)
    )
    assert result.artifact.read("predictions").height == 3


def test_report_to_tensorboard_writes_event_files_and_keeps_the_version(toy) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, model = toy
    first = train(store, model, output="policy-tracked", report_to=["tensorboard"])
    logs = store.root / ".logs" / f"policy-tracked-{first.artifact.version}"
    events = EventAccumulator(str(logs)).Reload()
    reward = events.Scalars("train/reward")
    assert [e.step for e in reward] == [1, 2, 3, 4]
    log = first.artifact.read("log")
    np.testing.assert_allclose([e.value for e in reward], log["reward"], rtol=1e-5)
    # where a run reports to is not part of what it is: the same run without it is skipped
    again = train(store, model, output="policy-tracked")
    assert again.skipped and again.artifact.version == first.artifact.version


def test_report_to_refuses_unknown_trackers_before_loading_a_model(toy) -> None:
    store, model = toy
    with pytest.raises(UserError, match="not a tracker transformers knows"):
        train(store, model, output="policy-typo", report_to=["tensorbord"])


def test_export_adapter_and_merged_folders_load_and_agree(toy, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.eval.config import EvalConfig
    from stages.eval.stage import evaluate
    from stages.export.policy import export_policy

    store, model = toy
    policy = train(store, model, output="policy-export").artifact
    evaluate(store, EvalConfig(policy="policy-export", max_new_tokens=8, bootstrap=50))
    adapter, full = export_policy(store, "policy-export", tmp_path / "adapter")
    merged, _ = export_policy(store, "policy-export", tmp_path / "merged", merged=True)
    assert full is False
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists() and (merged / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(merged)
    ids = tok("Film 3 (1983) is a comedy.", return_tensors="pt").input_ids
    on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), adapter)
    alone = AutoModelForCausalLM.from_pretrained(merged)
    with torch.no_grad():
        np.testing.assert_allclose(
            on_base(ids).logits.numpy(), alone(ids).logits.numpy(), atol=1e-4, rtol=1e-4
        )
    card = (adapter / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "library_name: peft" in card
    assert "library_name: transformers" in (merged / "README.md").read_text()
    assert "`eval-policy-export@" in card and "| all |" in card  # the eval, with its interval
    assert json.loads((adapter / "rerec.json").read_text())["policy"] == policy.ref
    with pytest.raises(UserError, match="is not empty"):
        export_policy(store, "policy-export", adapter)
