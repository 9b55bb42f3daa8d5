"""`rerec train`: GRPO on TRL with dual-graph rewards, RAAE token advantages and the online
curriculum; the result is a `policy` artifact.

How the pieces sit on TRL's `GRPOTrainer`:

- Rewards: one TRL reward function per component (format, NDCG, and for rerec QAS and PAS) with
  the configured weights, so TRL logs each; all four come from one vectorised `score_batch`
  call per batch (`BatchScorer` caches it).
- Advantages: `_generate_and_score_completions` is overridden. After TRL generated, scored and
  computed its scalar group advantages, rerec replaces them by (B, T) token advantages (RAAE):
  token rewards from the completion's segments, then mean and std over all valid tokens of
  each group. A group may span processes: each process sends per-completion sums, sums of
  squares and token counts (`accelerator.gather`), so every process normalises with the whole
  group's statistics. reinforce++ normalises the scalar reward over the whole (global) batch.
- Curriculum: the queries of each step are chosen when they are generated (`CurriculumSchedule`),
  so an epoch is ordered from every rollout of the previous one; TRL's sampler only paces steps.
- Checkpoints: the run folder (`<workdir>/.runs/<artifact>-<version>/`) holds TRL checkpoints
  plus the schedule, rollouts and log; `--resume` continues from the last one with the same
  data order, curriculum state and RNG state; Ctrl-C saves one before exiting.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from datasets import Dataset
from transformers import StoppingCriteriaList, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import GRPOConfig, GRPOTrainer

from schemas.policy import CURRICULUM, LOG, ROLLOUTS
from stages.curriculum import CurriculumSampler, CurriculumSchedule
from stages.devices import pick_device
from stages.errors import UserError
from stages.generation import (
    BoxStop,
    load_model_folder,
    quiet_libraries,
    resolve_precision,
)
from stages.models import model_fingerprint, require_vllm, resolve_model
from stages.prompts import (
    PROMPT_OPTIONS,
    prompt_options,
    prompt_token_stats,
    render_messages,
    token_stats_metrics,
)
from stages.queries_reader import read_split
from stages.raae import group_token_advantages, token_rewards
from stages.rewards import RewardIndex, RewardWeights, score_batch
from stages.store import Artifact, ArtifactStore, ArtifactWriter, BuildResult, version_id
from stages.train_config import TrainConfig

STATE_FILE = "rerec_state.json"
QUERY_COLUMNS = (
    "query_id",
    "family",
    "candidate_item_ids",
    "candidate_titles",
    "positive_item_ids",
)


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class Inputs:
    queries: Artifact
    graph: Artifact
    cf: Artifact | None
    model_artifact: Artifact | None
    model_path: str  # folder (or hub id)
    train: pl.DataFrame
    warnings: list[str]  # inputs from different ancestors, allowed with --allow-mismatch


def load_inputs(store: ArtifactStore, cfg: TrainConfig) -> Inputs:
    queries = store.resolve(cfg.queries, kind="queries")
    if cfg.graph:
        graph = store.resolve(cfg.graph, kind="graph")
    else:
        graph = store.input_of(queries, "graph")
    cf = None
    if cfg.use_pas:
        cf_name = cfg.cf or "cf" + graph.name.removeprefix("graph")
        if not store.exists(cf_name.partition("@")[0]):
            raise UserError(
                f"PAS needs LightGCN embeddings: no artifact '{cf_name}' in {store.root}; "
                f"run `rerec pretrain-cf --graph {graph.name}` or pass --no-pas"
            )
        cf = store.resolve(cf_name, kind="embeddings")
    model_artifact, model_path = resolve_model(store, cfg.model)
    warnings = store.check_mismatch(
        [a for a in (queries, graph, cf, model_artifact) if a is not None],
        allow=cfg.allow_mismatch,
    )
    part = cfg.part
    if part == "auto":  # RL from a cold start learns from the half the SFT did not see
        sft_part = None
        if model_artifact is not None and model_artifact.manifest.kind == "policy":
            sft_part = model_artifact.manifest.config.get("part")
        part = {"sft": "rl", "rl": "sft"}.get(sft_part, "all")
    train = read_split(
        queries, "train", families=cfg.families, limit=cfg.limit, seed=cfg.seed, part=part
    )
    return Inputs(queries, graph, cf, model_artifact, model_path, train, warnings)


def build_dataset(train: pl.DataFrame, cfg: TrainConfig) -> Dataset:
    rows = train.to_dicts()
    return Dataset.from_dict(
        {
            "prompt": [render_messages(q, k=cfg.k, **prompt_options(cfg)) for q in rows],
            **{c: [q[c] for q in rows] for c in QUERY_COLUMNS},
        }
    )


# ---------------------------------------------------------------------------------------------
# rewards


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
        self._key: tuple[int, int] | None = None
        self.last: dict[str, Any] = {}
        self.seconds = 0.0  # spent scoring, for the step-overhead benchmark

    def score(self, completions: Sequence[Any], **columns: Any) -> dict[str, Any]:
        key = (id(completions), len(completions))
        if key != self._key:
            started = time.perf_counter()
            texts = [completion_text(c) for c in completions]
            queries = [{c: columns[c][i] for c in QUERY_COLUMNS} for i in range(len(completions))]
            parts = score_batch(texts, queries, self.index, self.weights)
            parts["texts"] = texts
            parts["queries"] = queries
            self.last, self._key = parts, key
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


# ---------------------------------------------------------------------------------------------
# RAAE on token ids


def token_offsets(tokenizer: Any, ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Character span of each generated token in ``text`` (the decoded completion). Decoding
    token by token is exact when the pieces add up to the text; otherwise (a character split
    over several byte tokens) each token's start is the length of the decoded prefix before it
    that agrees with the text."""
    pieces = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    if "".join(pieces) == text:
        ends = np.cumsum([len(p) for p in pieces]).tolist()
        starts = [0, *ends[:-1]]
        return list(zip(starts, ends, strict=True))
    starts = []
    for t in range(len(ids)):
        prefix = tokenizer.decode(list(ids[:t]), skip_special_tokens=True)
        n = 0
        limit = min(len(prefix), len(text))
        while n < limit and prefix[n] == text[n]:
            n += 1
        starts.append(n)
    ends = [*starts[1:], len(text)]
    return list(zip(starts, ends, strict=True))


def wrong_title(parts: dict[str, Any], i: int) -> str | None:
    """The title of completion i's recommended candidate when it is not a ground truth."""
    pred = int(parts["pred"][i])
    if pred < 0 or parts["correct"][i]:
        return None
    q = parts["queries"][i]
    return q["candidate_titles"][list(q["candidate_item_ids"]).index(pred)]


def raae_advantages(
    tokenizer: Any,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    parts: dict[str, Any],
    rewards_all: torch.Tensor,
    *,
    gather: Callable[[torch.Tensor], torch.Tensor],
    start: int,
    num_generations: int,
    w_penalty: float,
    mode: str = "per-token",
) -> tuple[torch.Tensor, float]:
    """(B, T) RAAE advantages of this process's B completions, and the share of their tokens
    that were penalised. ``parts`` is this process's `score_batch` output (with texts and
    queries), ``rewards_all`` every process's rewards in global order, ``start`` the global
    index of this process's first completion, ``gather`` concatenates a tensor over processes."""
    mask = completion_mask.to(torch.float64).cpu()
    ntok = mask.sum(dim=1)
    B = completion_ids.shape[0]
    tok_r = torch.zeros_like(mask)
    penalised = 0
    for i in range(B):
        n = int(ntok[i])
        row = completion_ids[i, :n].tolist()
        text = tokenizer.decode(row, skip_special_tokens=True)
        r = float(parts["reward"][i])
        values = token_rewards(
            text,
            token_offsets(tokenizer, row, text),
            r,
            wrong_title(parts, i),
            w_penalty=w_penalty,
        )
        penalised += int((values != r).sum())
        tok_r[i, :n] = torch.as_tensor(values, dtype=torch.float64)
    groups = torch.arange(start, start + B) // num_generations
    if mode == "per-token":
        stats = torch.stack([(tok_r * mask).sum(1), (tok_r**2 * mask).sum(1), ntok], dim=1)
        device = completion_ids.device
        stats = gather(stats.to(device)).cpu().view(-1, num_generations, 3).sum(dim=1)
        sums = stats[groups]
    elif mode == "per-completion":  # the G scalar rewards' mean and std, for every token
        r = rewards_all.to(torch.float64).cpu().view(-1, num_generations)
        mean, var = r.mean(1), r.var(1, unbiased=False)
        sums = torch.stack([mean[groups], var[groups] + mean[groups] ** 2, torch.ones(B)], 1)
    else:
        raise ValueError(f"unknown advantage mode {mode!r}")
    share = penalised / max(float(ntok.sum()), 1.0)
    return group_token_advantages(tok_r, mask, sums), share


# ---------------------------------------------------------------------------------------------
# the trainer


@dataclass
class RunState:
    """What a checkpoint holds beyond TRL's own files."""

    rollouts: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    chunk_epochs: list[int] = field(default_factory=list)


def bf16_rollout_model(policy: Any, rollout: Any | None = None) -> Any:
    """A bf16 copy of ``policy`` with its LoRA adapter merged in, to generate the rollouts of a
    bf16 CPU run; ``rollout`` (the previous copy) is refreshed in place from the policy's
    current weights.

    Training runs under autocast with fp32 weights, but autocast recasts every weight at every
    generated token and LoRA adds two small products per layer: on SmolLM2 (4 rows of 600
    prompt tokens, 2 cores) such a model decoded at 0.15 s a token against 0.12 s in fp32,
    and this merged bf16 copy at 0.09 s, with the prompt pass 1.9x faster than fp32. The copy
    costs one pass over the weights per step; sampling from it instead of the autocast policy
    differs by bf16 rounding, as a bf16 vLLM engine does on a GPU."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import AutoModelForCausalLM

    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    weights: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if not isinstance(module, BaseTunerLayer):
                continue
            layer = module.get_base_layer()
            weight = layer.weight
            if not module.disable_adapters:
                for adapter in module.active_adapters:
                    if adapter in getattr(module, "lora_A", {}):
                        weight = weight + module.get_delta_weight(adapter)
            weights[f"{name}.weight"] = weight
            if getattr(layer, "bias", None) is not None:
                weights[f"{name}.bias"] = layer.bias
        for name, param in base.named_parameters():
            if "lora_" not in name:
                weights.setdefault(name.replace(".base_layer.", "."), param)
        if rollout is None:  # random init, overwritten below: it must not move the seeded RNG
            with torch.random.fork_rng(devices=[]):
                rollout = AutoModelForCausalLM.from_config(base.config, dtype=torch.bfloat16)
            rollout.requires_grad_(False).eval()
        for name, param in rollout.named_parameters():
            param.copy_(weights[name])
    rollout.generation_config = copy.deepcopy(policy.generation_config)
    return rollout


class RerecGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with curriculum-chosen queries and rerec / reinforce++ advantages; rollouts
    end at their box, and a bf16 CPU run samples them from a bf16 copy of the policy."""

    def __init__(
        self,
        *args: Any,
        rerec_cfg: TrainConfig,
        scorer: BatchScorer,
        schedule: CurriculumSchedule,
        rows: Dataset,
        stop_at_box: bool = True,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.rerec_cfg, self.scorer, self.schedule, self.rows = rerec_cfg, scorer, schedule, rows
        self.stop_at_box = stop_at_box
        self._rollout: Any = None  # the bf16 copy that generates (bf16 CPU runs)
        self.run_state = RunState()
        self.advantage_seconds = 0.0  # RAAE, gathers, logging: our work beyond TRL's

    # rollouts: transformers generation ends each row at its box (`BoxStop`); in a bf16 CPU
    # run a bf16 copy of the policy generates them (`bf16_rollout_model`)
    def _generate_single_turn(self, prompt_ids, *args: Any, **kwargs: Any):
        """TRL's generation with `BoxStop` added to `generate` (TRL passes no stopping criteria
        and its GenerationConfig cannot hold one), then each stopped row cut at its box: TRL
        ends a completion at its first EOS, and what follows a stopped row is padding (an EOS
        where pad and EOS agree, as in SmolLM2). The completion mask TRL builds from these
        lists then covers exactly the generated tokens. vLLM (and TRL's continuous batching)
        generate as TRL configures them: vLLM's literal stop strings cannot tell a box's
        closing brace from another one."""
        if self.use_vllm or self.use_transformers_continuous_batching:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        model = self.accelerator.unwrap_model(self.model_wrapped)
        rollout = None
        if self.args.bf16 and self.accelerator.device.type == "cpu":
            rollout = self._rollout = bf16_rollout_model(model, self._rollout)
        if not (self.stop_at_box or rollout is not None):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        generate = model.generate if rollout is None else rollout.generate
        stops: list[BoxStop] = []

        def generate_to_box(*a: Any, **kw: Any) -> Any:
            if self.stop_at_box:
                stops.append(BoxStop(self.processing_class, kw["input_ids"].shape[1]))
                criteria = StoppingCriteriaList([*(kw.pop("stopping_criteria", None) or [])])
                criteria.append(stops[-1])
                kw["stopping_criteria"] = criteria
            return generate(*a, **kw)

        model.generate = generate_to_box
        try:
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        finally:
            del model.generate
        if stops:
            completion_ids = [stops[-1].trim(r, list(ids)) for r, ids in enumerate(completion_ids)]
        return completion_ids, logprobs

    # the queries of a step come from the curriculum schedule
    def _curriculum_inputs(self, n_local: int) -> list[dict[str, Any]]:
        chunk = self.schedule.next_chunk()
        self.run_state.chunk_epochs.append(self.schedule.epoch)
        G = self.num_generations
        flat = [i for i in chunk for _ in range(G)]
        start = self.accelerator.process_index * n_local
        mine = flat[start : start + n_local]
        if len(mine) != n_local:
            raise RuntimeError(f"curriculum chunk of {len(flat)} rows cannot fill {n_local}")
        return [self.rows[i] for i in mine]

    def _generate_and_score_completions(self, inputs):
        training = self.model.training
        if training:
            inputs = self._curriculum_inputs(len(inputs))
        output = super()._generate_and_score_completions(inputs)
        if training:
            started = time.perf_counter()
            self._rerec_advantages(output)
            self.advantage_seconds += time.perf_counter() - started
        return output

    def _rerec_advantages(self, output: dict[str, Any]) -> None:
        cfg, acc = self.rerec_cfg, self.accelerator
        parts = self.scorer.last
        device = output["completion_ids"].device
        mask = output["completion_mask"].to(torch.float64)
        ntok = mask.sum(dim=1)
        index_of = {q: n for n, q in enumerate(self.schedule.sampler.query_ids)}
        local_columns = {
            "query": np.array([index_of[q["query_id"]] for q in parts["queries"]], np.float64),
            "reward": parts["reward"],
            "format": parts["format"],
            "ndcg": parts["ndcg"],
            "qas": parts["qas"],
            "pas": parts["pas"],
            "correct": parts["correct"].astype(np.float64),
            "completion_tokens": ntok.cpu().numpy(),
        }
        local = torch.tensor(
            np.stack(list(local_columns.values()), axis=1), dtype=torch.float64, device=device
        )
        # every process's completions, in global order, column by column
        everyone = dict(zip(local_columns, acc.gather(local).cpu().numpy().T, strict=True))
        G = self.num_generations
        rewards_all = torch.as_tensor(everyone["reward"], dtype=torch.float64)
        B = len(parts["texts"])
        start = acc.process_index * B
        penalised_share = 0.0

        if cfg.algo == "reinforce++":
            adv = (rewards_all - rewards_all.mean()) / (rewards_all.std(unbiased=False) + 1e-4)
            output["advantages"] = adv[start : start + B].to(device=device, dtype=torch.float32)
        elif cfg.use_raae:
            adv, penalised_share = raae_advantages(
                self.processing_class,
                output["completion_ids"],
                output["completion_mask"],
                parts,
                rewards_all,
                gather=acc.gather,
                start=start,
                num_generations=G,
                w_penalty=cfg.w_penalty,
                mode=cfg.advantage,
            )
            output["advantages"] = adv.to(device=device, dtype=torch.float32)
        # else: TRL's scalar group advantages of the weighted reward (grpo, rerec --no-raae)

        # logging, rollouts and the curriculum (identical on every process)
        step = self.state.global_step
        epoch = self.schedule.epoch
        names = self.schedule.sampler.query_ids
        families = self._families
        rows = [
            {
                "step": step + 1,
                "epoch": epoch,
                "query_id": names[int(query)],
                "family": families[int(query)],
                "reward": float(reward),
                "format": float(fmt),
                "ndcg": float(ndcg),
                "qas": float(qas),
                "pas": float(pas),
                "correct": bool(correct > 0.5),
                "completion_tokens": int(tokens),
            }
            for query, reward, fmt, ndcg, qas, pas, correct, tokens in zip(
                *everyone.values(), strict=True
            )
        ]
        self.run_state.rollouts.extend(rows)
        self.schedule.record([{k: r[k] for k in ("query_id", "ndcg", "reward")} for r in rows])
        m = self._metrics["train"]
        for name in ("format", "ndcg", "qas", "pas"):
            m[f"rerec/{name}"].append(float(everyone[name].mean()))
        m["rerec/total"].append(float(everyone["reward"].mean()))
        m["rerec/accuracy"].append(float(everyone["correct"].mean()))
        m["rerec/valid_format"].append(float((everyone["format"] > 0).mean()))
        m["rerec/penalised_token_share"].append(penalised_share)
        m["rerec/epoch"].append(float(epoch))

    @property
    def _families(self) -> list[str]:
        if not hasattr(self, "_family_list"):
            self._family_list = list(self.rows["family"])
        return self._family_list

    # checkpoints carry the schedule, rollouts and log
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = (
                Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            )
            state = {
                "schedule": self.schedule.state_dict(),
                "rollouts": self.run_state.rollouts,
                "log": self.run_state.log,
                "chunk_epochs": self.run_state.chunk_epochs,
            }
            (folder / STATE_FILE).write_text(json.dumps(state))

    def save_checkpoint_now(self) -> None:
        """A full checkpoint at the current step (weights, optimizer, RNG, the curriculum and
        the logs so far): what an interrupted run resumes from with --resume."""
        self._save_checkpoint(self.model, None)

    def load_rerec_state(self, checkpoint: Path) -> None:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        self.schedule.load_state_dict(state["schedule"])
        self.run_state = RunState(state["rollouts"], state["log"], state["chunk_epochs"])


# ---------------------------------------------------------------------------------------------
# logging and progress


def _num(logs: dict[str, Any], key: str) -> float | None:
    value = logs.get(key)
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    )


class StepLog(TrainerCallback):
    """One log row per optimizer step (the `log` table) and the progress display."""

    def __init__(self, trainer: RerecGRPOTrainer, total: int, on_step: Callable | None):
        self.trainer, self.total, self.on_step = trainer, total, on_step
        self._last = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 or not hasattr(self, "_started"):
            self._started = True
            self._last = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "rerec/total" not in logs:
            return
        now = time.perf_counter()
        row = {
            "step": state.global_step,
            "epoch": int(logs.get("rerec/epoch", 0)),
            "reward": _num(logs, "rerec/total"),
            "reward_std": _num(logs, "reward_std"),
            "format": _num(logs, "rerec/format"),
            "ndcg": _num(logs, "rerec/ndcg"),
            "qas": _num(logs, "rerec/qas"),
            "pas": _num(logs, "rerec/pas"),
            "accuracy": _num(logs, "rerec/accuracy"),
            "valid_format": _num(logs, "rerec/valid_format"),
            "kl": _num(logs, "kl"),
            "loss": _num(logs, "loss"),
            "grad_norm": _num(logs, "grad_norm"),
            "learning_rate": _num(logs, "learning_rate"),
            "completion_length_mean": _num(logs, "completions/mean_length"),
            "completion_length_max": _num(logs, "completions/max_length"),
            "clip_fraction": _num(logs, "clip_ratio/region_mean"),
            "penalised_token_share": _num(logs, "rerec/penalised_token_share"),
            "seconds": round(now - self._last, 4),
        }
        self._last = now
        self.trainer.run_state.log.append(row)
        if self.on_step is not None and state.is_world_process_zero:
            self.on_step(row, self.total)


class StopAfterEpochs(TrainerCallback):
    """Ends the run when the schedule has handed out its last epoch and it was trained."""

    def __init__(self, schedule: CurriculumSchedule, epochs: int | None):
        self.schedule, self.epochs = schedule, epochs

    def on_step_end(self, args, state, control, **kwargs):
        if (
            self.epochs is not None
            and self.schedule.epoch >= self.epochs - 1
            and self.schedule.epoch_done()
        ):
            control.should_training_stop = True
            control.should_save = False


# ---------------------------------------------------------------------------------------------
# the stage


def check_vllm(cfg: TrainConfig, device: str) -> None:
    if not cfg.use_vllm:
        return
    require_vllm()
    if device != "cuda":
        raise UserError("--use-vllm needs a CUDA device (vLLM has no CPU backend)")


def batch_layout(cfg: TrainConfig, world: int) -> tuple[int, int]:
    """(completions per forward pass and process, micro-steps per optimizer step)."""
    total = cfg.prompts_per_step * cfg.num_generations
    if total % world:
        raise UserError(
            f"prompts_per_step × num_generations = {total} completions per step cannot be split "
            f"over {world} processes"
        )
    per_process = total // world
    micro = cfg.micro_batch or per_process
    if per_process % micro:
        raise UserError(
            f"micro_batch {micro} does not divide the {per_process} completions each process "
            f"makes per step (prompts_per_step {cfg.prompts_per_step} × num_generations "
            f"{cfg.num_generations} / {world} processes)"
        )
    return micro, per_process // micro


def run_dir(store: ArtifactStore, name: str, vid: str) -> Path:
    return store.root / ".runs" / f"{name}-{vid}"


def last_checkpoint(folder: Path) -> Path | None:
    found = [
        (int(p.name.rsplit("-", 1)[1]), p)
        for p in folder.glob("checkpoint-*")
        if p.name.rsplit("-", 1)[1].isdigit() and (p / STATE_FILE).is_file()
    ]
    return max(found)[1] if found else None


def _load_model(path: str, device: str, precision: str):
    """bf16 weights on CUDA for a bf16 run; on CPU fp32 weights (bf16 runs under autocast)."""
    bf16_weights = device == "cuda" and precision == "bf16"
    return load_model_folder(path, torch.bfloat16 if bf16_weights else torch.float32)


def grpo_args(
    cfg: TrainConfig,
    folder: Path,
    steps: int,
    micro: int,
    accumulation: int,
    device: str,
    weights: list[float],
    precision: str = "fp32",
) -> GRPOConfig:
    """TRL's config for a run: one generation per optimizer step, paper defaults. bf16 on CPU
    is accelerate's mixed precision: the forward passes of the loss and of the reference run
    under `torch.autocast("cpu", torch.bfloat16)`, the weights, LoRA and optimizer states stay
    fp32."""
    return GRPOConfig(
        output_dir=str(folder),
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        max_steps=steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type="dapo",  # token-mean over the batch, as in the paper's verl setup
        scale_rewards="group",
        reward_weights=weights,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        activation_checkpointing=device == "cuda",
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        report_to=["tensorboard"] if cfg.tensorboard else "none",
        disable_tqdm=True,
        log_level="warning",
        shuffle_dataset=False,
        dataloader_num_workers=0,
    )


def lora_config(cfg: TrainConfig):
    """LoRA on every linear layer, or None for full fine-tuning."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def make_trainer(
    cfg: TrainConfig,
    inputs: Inputs,
    folder: Path,
    device: str,
    world: int = 1,
    *,
    plain_trl: bool = False,
    on_step: Callable[[dict[str, Any], int], None] | None = None,
    stop_at_box: bool = True,
) -> tuple[GRPOTrainer, int]:
    """The trainer of a run and its step budget. ``plain_trl`` builds TRL's own GRPOTrainer on
    the same model, rewards, data order and config (the step-overhead benchmark's baseline).
    ``stop_at_box`` ends each rollout at its box (the overhead benchmark turns it off to
    generate what TRL generates)."""
    micro, accumulation = batch_layout(cfg, world)
    quiet_libraries()
    precision = resolve_precision(cfg.precision, device)
    model, tokenizer = _load_model(inputs.model_path, device, precision)
    rows = build_dataset(inputs.train, cfg)
    index = RewardIndex.from_tables(
        inputs.graph.read("item_attributes").select("item_id", "attr_id"),
        inputs.cf.read("item_embeddings") if inputs.cf else None,
    )
    scorer = BatchScorer(index, reward_weights(cfg))
    funcs, weights = reward_functions(scorer, cfg)
    sampler = CurriculumSampler(
        list(rows["query_id"]),
        tau=cfg.tau,
        min_keep=cfg.min_keep or cfg.prompts_per_step,
        enabled=cfg.use_curriculum,
        seed=cfg.seed,
    )
    schedule = CurriculumSchedule(sampler, cfg.prompts_per_step, cfg.difficulty)
    steps = cfg.steps or cfg.epochs * math.ceil(rows.num_rows / cfg.prompts_per_step)
    args = grpo_args(cfg, folder, steps, micro, accumulation, device, weights, precision)
    torch.manual_seed(cfg.seed)
    if plain_trl:  # the first epoch's order, which TRL's unshuffled sampler then follows
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=rows.select(sampler.order),
            processing_class=tokenizer,
            peft_config=lora_config(cfg),
        )
        trainer.scorer = scorer
    else:
        trainer = RerecGRPOTrainer(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=lora_config(cfg),
            rerec_cfg=cfg,
            scorer=scorer,
            schedule=schedule,
            rows=rows,
            stop_at_box=stop_at_box,
        )
        trainer.add_callback(StepLog(trainer, steps, on_step))
        trainer.add_callback(StopAfterEpochs(schedule, None if cfg.steps else cfg.epochs))
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer, steps


def with_prompt_defaults(cfg: TrainConfig, start: Artifact | None) -> TrainConfig:
    """Unset prompt options take the starting policy's (RL from `rerec sft` sees the prompts
    the cold start learned on), else their defaults; the resolved values are what the version
    id, the manifest and policy.json record."""
    info: dict[str, Any] = {}
    if start is not None and start.manifest.kind == "policy":
        info = json.loads(start.file("policy.json").read_text())
    inherited = prompt_options(info)
    return cfg.model_copy(
        update={name: inherited[name] for name in PROMPT_OPTIONS if getattr(cfg, name) is None}
    )


def train_policy(
    store: ArtifactStore,
    cfg: TrainConfig,
    *,
    force: bool = False,
    resume: bool = False,
    command: str | None = None,
    on_step: Callable[[dict[str, Any], int], None] | None = None,
    on_prompts: Callable[[pl.DataFrame], None] | None = None,
) -> BuildResult:
    """Train a policy and store it as an artifact (written by the main process only).
    ``on_prompts`` receives the training prompts' token counts per family (`prompt_token_stats`)
    once they are rendered."""
    from accelerate import PartialState

    inputs = load_inputs(store, cfg)
    cfg = with_prompt_defaults(cfg, inputs.model_artifact)
    name = cfg.artifact_name(inputs.queries.name)
    device = pick_device(cfg.device)
    check_vllm(cfg, device)
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard")
    art_inputs = [a for a in (inputs.queries, inputs.graph, inputs.cf, inputs.model_artifact) if a]
    config = {
        **cfg.model_dump(mode="json"),
        "model_fingerprint": None
        if inputs.model_artifact
        else model_fingerprint(inputs.model_path),
    }
    if not force and (done := store.built(name, config=config, inputs=art_inputs)) is not None:
        return done
    from schemas import schema_for

    # the run folder (checkpoints, resumable) is named by the version the run will write
    vid = version_id(name, schema_for(name).version, config, [a.as_input() for a in art_inputs])

    dist = PartialState(cpu=device == "cpu")
    # The main process holds the artifact's write lock for the whole run: a second run of the
    # same policy is refused instead of deleting this one's checkpoints.
    with store.lock(name) if dist.is_main_process else contextlib.nullcontext():
        return _train_and_write(
            store,
            cfg,
            inputs,
            name,
            vid,
            config,
            art_inputs,
            dist,
            device,
            force=force,
            resume=resume,
            command=command,
            on_step=on_step,
            on_prompts=on_prompts,
        )


def _train_and_write(
    store: ArtifactStore,
    cfg: TrainConfig,
    inputs: Inputs,
    name: str,
    vid: str,
    config: dict[str, Any],
    art_inputs: list[Artifact],
    dist: Any,
    device: str,
    *,
    force: bool,
    resume: bool,
    command: str | None,
    on_step: Callable[[dict[str, Any], int], None] | None,
    on_prompts: Callable[[pl.DataFrame], None] | None = None,
) -> BuildResult:
    started = time.perf_counter()
    world = dist.num_processes
    batch_layout(cfg, world)  # a bad layout fails before anything is loaded
    folder = run_dir(store, name, vid)
    checkpoint = last_checkpoint(folder) if resume else None
    if resume and checkpoint is None:
        raise UserError(f"--resume: no checkpoint in {folder} (nothing to resume)")
    if not resume and folder.exists() and dist.is_main_process:
        shutil.rmtree(folder)
    dist.wait_for_everyone()

    trainer, _ = make_trainer(cfg, inputs, folder, device, world, on_step=on_step)
    tokenizer = trainer.processing_class
    prompt_tokens = prompt_token_stats(inputs.train, tokenizer, k=cfg.k, **prompt_options(cfg))
    if on_prompts is not None and dist.is_main_process:
        on_prompts(prompt_tokens)
    if checkpoint is not None:
        trainer.load_rerec_state(checkpoint)

    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:
        trainer.save_checkpoint_now()
        dist.wait_for_everyone()
        raise UserError(
            f"interrupted at step {trainer.state.global_step}; checkpoint saved in {folder}; "
            "rerun the same command with --resume to continue"
        ) from None

    result: BuildResult | None = None
    if dist.is_main_process:

        def build(writer: ArtifactWriter) -> None:
            write_policy(writer, trainer, tokenizer, cfg, inputs)
            writer.metrics["prompt_tokens"] = token_stats_metrics(prompt_tokens)

        result = store.build(
            name,
            config=config,
            inputs=art_inputs,
            build=build,
            force=True,
            command=command,
            warnings=inputs.warnings,
            started=started,  # the run, not only the writing
        )
        shutil.rmtree(folder, ignore_errors=True)
    dist.wait_for_everyone()
    if result is None:  # other processes: the artifact the main process wrote
        result = BuildResult(store.resolve(f"{name}@{vid}"), skipped=False)
    return result


# Files of the base model linked into a LoRA policy's model/ folder (see `portable_adapter`).
def _base_model_file(name: str) -> bool:
    return name in {"config.json", "generation_config.json"} or name.endswith(
        (".safetensors", ".safetensors.index.json")
    )


def portable_adapter(model_dir: Path, base: Artifact, base_path: str) -> None:
    """Make a LoRA policy's `model/` folder survive moving the workdir.

    PEFT records the base model's absolute path, which breaks when the workdir moves. The
    adapter config names the base relative to the adapter folder instead
    (``../../../<base>/<version>/model``, inside the same workdir), and the base model's config
    and weights are linked in with relative symlinks (no copy): the folder is then a complete
    transformers folder with an embedded adapter, and ``AutoModelForCausalLM.from_pretrained``
    on it loads base and adapter from any working directory, moved or not. PEFT's own
    ``AutoPeftModelForCausalLM`` resolves the base path against the working directory, so it
    needs to run from the adapter folder. rerec finds the base through policy.json (a store
    reference) and reads only the adapter from this folder.
    """
    rel = Path("..", "..", "..", base.path.parent.name, base.path.name, "model")
    config_file = model_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = rel.as_posix()
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    card = model_dir / "README.md"  # PEFT's model card repeats the path
    if card.is_file():
        card.write_text(card.read_text().replace(base_path, rel.as_posix()))
    for f in sorted(Path(base_path).iterdir()):
        if _base_model_file(f.name) and not (model_dir / f.name).exists():
            (model_dir / f.name).symlink_to(rel / f.name)


def write_policy(
    writer: ArtifactWriter,
    trainer: RerecGRPOTrainer,
    tokenizer: Any,
    cfg: TrainConfig,
    inputs: Inputs,
) -> None:
    model_dir = writer.file("model")
    model_dir.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    if cfg.lora and inputs.model_artifact is not None:
        portable_adapter(model_dir, inputs.model_artifact, inputs.model_path)
    base = inputs.model_artifact.ref if inputs.model_artifact else inputs.model_path
    precision = "bf16" if trainer.args.bf16 else "fp32"
    policy = {
        "base_model": base,
        "base_model_is_artifact": inputs.model_artifact is not None,
        "adapter": cfg.lora,
        "algo": cfg.algo,
        "k": cfg.k,
        **prompt_options(cfg),  # candidate_facts, named_facts, history: eval's defaults
        "graph": inputs.graph.ref,
        "queries": inputs.queries.ref,
        "precision": precision,  # as resolved on the training machine (config: cfg.precision)
    }
    writer.file("policy.json").write_text(json.dumps(policy, indent=2) + "\n")
    writer.metrics["precision"] = precision
    state = trainer.run_state
    log = (
        pl.DataFrame(state.log, schema=LOG.columns)
        if state.log
        else pl.DataFrame(schema=LOG.columns)
    )
    writer.write_table("log", log)
    writer.write_table("rollouts", pl.DataFrame(state.rollouts, schema=ROLLOUTS.columns))
    writer.write_table(
        "curriculum", pl.DataFrame(trainer.schedule.table, schema=CURRICULUM.columns)
    )
    if log.height:
        tail = log.tail(min(10, log.height))
        writer.metrics.update(
            steps=int(log["step"].max()),
            epochs=int(log["epoch"].max()) + 1,
            first_reward=float(log["reward"][0]),
            last_reward_mean10=float(tail["reward"].mean()),
            last_accuracy_mean10=float(tail["accuracy"].mean()),
            median_seconds_per_step=float(log["seconds"].median()),
            training_queries=inputs.train.height,
        )
