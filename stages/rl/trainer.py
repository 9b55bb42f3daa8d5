"""`RerecGRPOTrainer`: TRL's `GRPOTrainer` with RAAE token advantages, the online curriculum
and resumable run state; the callbacks that log and pace it."""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import StoppingCriteriaList, TrainerCallback
from trl import GRPOTrainer

from stages.core.atomic import write_durably
from stages.llm.generation import BoxStop
from stages.rl.config import TrainConfig
from stages.rl.curriculum import CurriculumSchedule
from stages.rl.raae import raae_advantages
from stages.rl.scoring import BatchScorer
from stages.rl.shared_prompts import (
    cache_keyword,
    can_share_in_generate,
    shared_prompt_cache,
    shared_prompt_logps,
)

STATE_FILE = "rerec_state.json"


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
        self._boundary: dict[str, Any] | None = None  # see `_mark_step_start`
        self._step_start = _StepStart(self)
        self.add_callback(self._step_start)

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
        share = self.rerec_cfg.share_prompts
        if not (self.stop_at_box or rollout is not None or share):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        generator = model if rollout is None else rollout
        generate = generator.generate  # before `model.generate` is replaced below
        stops: list[BoxStop] = []

        def generate_to_box(*a: Any, **kw: Any) -> Any:
            if share and not a and can_share_in_generate(kw):
                # --share-prompts: each distinct prompt's pass runs once for its G rows
                cache = shared_prompt_cache(generator, kw["input_ids"], kw["attention_mask"])
                if cache is not None:
                    kw[cache_keyword(generator)] = cache
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

    # the loss's forward pass: with --share-prompts, a prompt runs once for its completions
    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **extra: Any,
    ):
        """TRL's pass, or `shared_prompt_logps` for each chunk whose rows share a prompt (text
        models; a chunk it cannot share through, e.g. under activation checkpointing, whose
        layers run without a cache, takes TRL's pass)."""
        if (
            not self.rerec_cfg.share_prompts
            or compute_aux_loss
            or any(v is not None for v in extra.values())
        ):
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size,
                compute_entropy,
                compute_aux_loss,
                **extra,
            )
        size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), size):
            ids, mask = input_ids[start : start + size], attention_mask[start : start + size]
            got = shared_prompt_logps(
                model, ids, mask, logits_to_keep, self.accelerator.autocast, compute_entropy
            )
            if got is None:  # no two rows share a prompt
                got = super()._get_per_token_logps_and_entropies(
                    model, ids, mask, logits_to_keep, None, compute_entropy
                )[:2]
            logps.append(got[0])
            entropies.append(got[1])
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

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
        texts = gather_object(list(parts["texts"]))  # every process's, in global order
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
                "completion": text,
            }
            for query, reward, fmt, ndcg, qas, pas, correct, tokens, text in zip(
                *everyone.values(), texts, strict=True
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
    def _rerec_state(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule.state_dict(),
            "rollouts": self.run_state.rollouts,
            "log": self.run_state.log,
            "chunk_epochs": self.run_state.chunk_epochs,
        }

    def _save_checkpoint(self, model, trial, rerec_state: dict[str, Any] | None = None):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = (
                Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            )
            state = json.dumps(rerec_state or self._rerec_state())
            write_durably(folder / STATE_FILE, lambda tmp: tmp.write_text(state))

    def _mark_step_start(self) -> None:
        """What a checkpoint of the completed steps holds, taken as a step starts: the
        curriculum's state and how many rollouts, log rows and chunks there are. A run
        interrupted in the middle of a step (its queries drawn and rolled out, not yet trained
        on) is saved from this, so that `--resume` redoes that step as an uninterrupted run
        does, instead of recording its rollouts twice and skipping its queries."""
        self._boundary = {
            "global_step": self.state.global_step,
            "schedule": self.schedule.state_dict(),  # copies; its rows are never changed
            "rollouts": len(self.run_state.rollouts),
            "log": len(self.run_state.log),
            "chunk_epochs": len(self.run_state.chunk_epochs),
        }

    def _load_rng_state(self, checkpoint):
        super()._load_rng_state(checkpoint)
        self._step_start.rng = _rng_states()  # a resumed run's RNG is the checkpoint's

    def save_checkpoint_now(self) -> bool:
        """A full checkpoint of the completed steps (weights, optimizer, the curriculum and the
        logs so far, and the RNG states as the last step ended, where a regular checkpoint
        takes them): what an interrupted run resumes from with --resume. False when training
        had not begun (nothing to save)."""
        rng = self._step_start.rng
        if rng is None:
            return False
        b = self._boundary
        state = None
        if b is not None and b["global_step"] == self.state.global_step:  # in a step
            state = {
                "schedule": b["schedule"],
                "rollouts": self.run_state.rollouts[: b["rollouts"]],
                "log": self.run_state.log[: b["log"]],
                "chunk_epochs": self.run_state.chunk_epochs[: b["chunk_epochs"]],
            }
        _set_rng_states(rng)
        self._save_checkpoint(self.model, None, state)
        return True

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


class _StepStart(TrainerCallback):
    """Keeps what `save_checkpoint_now` saves for a killed run: the RNG states as the last step
    ended (where a regular checkpoint takes them; the next epoch's data loader draws from them
    before the next step begins), or as training began or a checkpoint's were loaded; and, as
    each step begins, the rest of the completed steps' state (`_mark_step_start`)."""

    def __init__(self, trainer: RerecGRPOTrainer):
        self.trainer = trainer
        self.rng: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.rng = _rng_states()

    def on_step_end(self, args, state, control, **kwargs):
        self.rng = _rng_states()

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer._mark_step_start()


def _rng_states() -> dict[str, Any]:
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


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
