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
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import GRPOConfig

from stages.core.artifact import Artifact, ArtifactWriter, BuildResult
from stages.core.devices import pick_device
from stages.core.errors import UserError
from stages.core.extra_args import activation_checkpointing, check_extra, check_extras
from stages.core.store import ArtifactStore
from stages.core.tracking import keep_tensorboard_logs, report_to
from stages.llm.generation import load_model_folder, quiet_libraries, resolve_precision
from stages.llm.lm_head import score_label_positions_only
from stages.llm.lora import lora_config
from stages.llm.models import model_fingerprint, require_vllm
from stages.llm.prompts import (
    PROMPT_OPTIONS,
    prompt_options,
    prompt_token_stats,
    token_stats_metrics,
)
from stages.rewards.dual_graph import RewardIndex
from stages.rl.config import TrainConfig
from stages.rl.curriculum import CurriculumSampler, CurriculumSchedule
from stages.rl.inputs import Inputs, build_dataset, load_inputs
from stages.rl.scoring import BatchScorer, reward_functions, reward_weights
from stages.rl.trainer import STATE_FILE, RerecGRPOTrainer, StepLog, StopAfterEpochs
from stages.rl.writer import write_policy

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


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint of a run that holds rerec's state file (`ArtifactStore.
    last_checkpoint`)."""
    return ArtifactStore.last_checkpoint(folder, STATE_FILE)


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
    fp32. ``cfg.trl`` sets GRPOConfig fields that no rerec option sets (rerec's defaults
    below included: the scheduler, the loss type, ...)."""
    args: dict[str, Any] = dict(
        output_dir=str(folder),
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.lr,
        max_steps=steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        reward_weights=weights,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_only_model=False,  # --resume needs the optimizer's, schedule's and RNG's state
        ignore_data_skip=False,
        report_to=report_to(cfg.report_to),
        run_name=folder.name,  # <artifact>-<version>: the run as trackers show it
        shuffle_dataset=False,
        dataloader_num_workers=0,
    )
    defaults = dict(  # rerec's choices that `--trl` may change
        lr_scheduler_type="constant",
        loss_type="dapo",  # token-mean over the batch, as in the paper's verl setup
        scale_rewards="group",
        disable_tqdm=True,
        log_level="warning",
    )
    defaults |= activation_checkpointing(GRPOConfig, device == "cuda")
    extra = check_extra("trl", GRPOConfig, cfg.trl, own=args)
    return GRPOConfig(**args, **(defaults | extra))


@dataclass
class TrainerParts:
    """What a GRPO trainer of a run is built from: the model, the data in its order, the
    rewards, the curriculum and TRL's arguments."""

    model: Any
    tokenizer: Any
    rows: Dataset
    scorer: BatchScorer
    reward_funcs: list
    sampler: CurriculumSampler
    schedule: CurriculumSchedule
    steps: int
    args: GRPOConfig


def trainer_parts(
    cfg: TrainConfig, inputs: Inputs, folder: Path, device: str, world: int = 1
) -> TrainerParts:
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
    return TrainerParts(model, tokenizer, rows, scorer, funcs, sampler, schedule, steps, args)


def make_trainer(
    cfg: TrainConfig,
    inputs: Inputs,
    folder: Path,
    device: str,
    world: int = 1,
    *,
    on_step: Callable[[dict[str, Any], int], None] | None = None,
    stop_at_box: bool = True,
) -> tuple[RerecGRPOTrainer, int]:
    """The trainer of a run and its step budget. ``stop_at_box`` ends each rollout at its box
    (the overhead benchmark turns it off to generate what TRL generates)."""
    p = trainer_parts(cfg, inputs, folder, device, world)
    score_label_positions_only()  # the loss scores completions only: on a CPU too
    torch.manual_seed(cfg.seed)
    trainer = RerecGRPOTrainer(
        model=p.model,
        reward_funcs=p.reward_funcs,
        args=p.args,
        train_dataset=p.rows,
        processing_class=p.tokenizer,
        peft_config=lora_config(cfg),
        rerec_cfg=cfg,
        scorer=p.scorer,
        schedule=p.schedule,
        rows=p.rows,
        stop_at_box=stop_at_box,
    )
    trainer.add_callback(StepLog(trainer, p.steps, on_step))
    trainer.add_callback(StopAfterEpochs(p.schedule, None if cfg.steps else cfg.epochs))
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer, p.steps


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
    report_to(cfg.report_to)  # an unknown or missing tracker fails before a model loads
    check_extras(cfg, GRPOConfig)  # so does a pass-through option that is not a field
    art_inputs = [a for a in (inputs.queries, inputs.graph, inputs.cf, inputs.model_artifact) if a]
    config = {
        **cfg.model_dump(mode="json"),
        "model_fingerprint": None
        if inputs.model_artifact
        else model_fingerprint(inputs.model_path),
    }
    if not force and (done := store.built(name, config=config, inputs=art_inputs)) is not None:
        return done
    # the run folder (checkpoints, resumable) is named by the version the run will write
    vid = store.planned_version(name, config=config, inputs=art_inputs)

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
    folder = store.run_folder(name, vid)
    # TRL reuses a step's generations for num_iterations updates from a buffer that no
    # checkpoint holds, so a resumed run would train on other rollouts than an unbroken one
    try:
        reused = int(cfg.trl.get("num_iterations", 1)) > 1
    except (TypeError, ValueError):
        raise UserError(
            f"--trl num_iterations: expected a whole number, got {cfg.trl['num_iterations']!r}"
        ) from None
    if resume and reused:
        raise UserError(
            "--resume cannot continue a run with --trl num_iterations>1 (the reused generations "
            "are not checkpointed); rerun without --resume"
        )
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
        # a run that reuses generations cannot resume: nothing worth saving
        saved = not reused and trainer.save_checkpoint_now()
        dist.wait_for_everyone()
        if reused:
            raise UserError(
                f"interrupted at step {trainer.state.global_step}; rerun the same command to "
                "start again (--resume cannot continue a run with num_iterations>1)"
            ) from None
        if not saved:
            raise UserError("interrupted before the first step; nothing to resume") from None
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
        keep_tensorboard_logs(folder, store.root, folder.name)
        store.remove_run_folder(name, folder)
    dist.wait_for_everyone()
    if result is None:  # other processes: the artifact the main process wrote
        result = BuildResult(store.resolve(f"{name}@{vid}"), skipped=False)
    return result
