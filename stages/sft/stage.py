"""`rerec sft`: a supervised cold start before RL.

Reads like a recipe: the queries' train half (``--part sft``), targets written from the graph
(`stages/sft/data.py`), the prompts every other stage renders (`stages/llm/prompts.py`), TRL's
`SFTTrainer` on prompt–completion pairs (loss on the completion tokens only), LoRA by default.
The result is a `policy`-kind artifact whose `model/` folder holds full weights (the adapter
merged into its base), so `rerec train --model sft` starts RL from it like from any model, and
`rerec eval --policy sft` / `rerec recommend --policy sft` use it like any policy.

A run checkpoints every ``save_steps`` into its run folder (`ArtifactStore.run_folder`; TRL's
checkpoint plus `SFT_STATE`, the step log so far, written last), and ``--resume`` continues
from the newest complete one: Transformers' Trainer restores the weights, optimizer, schedule and
RNG and skips the examples already seen, so the result equals an unbroken run's (pinned by a
test). The folder goes once the policy is written.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from schemas.sft import EXAMPLES, SFT_LOG
from stages.core.artifact import Artifact, ArtifactWriter, BuildResult
from stages.core.atomic import write_durably
from stages.core.devices import pick_device
from stages.core.errors import UserError
from stages.core.extra_args import activation_checkpointing, check_extra, check_extras
from stages.core.numerics import blas_reproducibility, blas_warnings
from stages.core.store import ArtifactStore
from stages.core.tracking import keep_tensorboard_logs, report_to
from stages.llm.generation import load_model_folder, quiet_libraries
from stages.llm.lm_head import score_label_positions_only
from stages.llm.lora import lora_config, portable_adapter
from stages.llm.models import resolve_model
from stages.llm.prompts import (
    prompt_options,
    prompt_token_stats,
    render_messages,
    token_stats_metrics,
)
from stages.queries.reader import NOUN, read_split
from stages.sft.config import SFTConfig
from stages.sft.data import write_completions


def rendering(cfg: SFTConfig) -> dict[str, Any]:
    """How prompts are rendered: K and the prompt options, as train and eval render them."""
    return {"k": cfg.k, **prompt_options(cfg)}


def build_examples(train: pl.DataFrame, graph: Artifact, cfg: SFTConfig) -> pl.DataFrame:
    """``query_id, family, prompt (chat messages as JSON), completion`` per training query."""
    facts = (
        graph.read("item_attributes")
        .join(graph.read("attributes"), on="attr_id")
        .select("item_id", "attr_id", "relation", "value")
    )
    domain = str(train["domain"][0]) if train.height else "movies"
    noun = NOUN.get(domain, ("item", "try"))[0]
    completions = write_completions(train, facts, cfg.seed, noun, cfg.candidate_facts)
    options = rendering(cfg)
    prompts = [json.dumps(render_messages(q, **options)) for q in train.to_dicts()]
    return train.select("query_id", "family").with_columns(
        prompt=pl.Series(prompts), completion=pl.Series(completions)
    )


SFT_STATE = "rerec_sft_state.json"  # in a checkpoint: the step log so far; written last


class StepLog(TrainerCallback):
    """Loss, token accuracy, learning rate, gradient norm and tokens/s per optimizer step;
    saved into each checkpoint (`SFT_STATE`), so a resumed run's log has every step."""

    def __init__(
        self,
        total: int,
        on_step: Callable[[dict[str, Any], int], None] | None,
        rows: list[dict[str, Any]] | None = None,
    ):
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.total, self.on_step = total, on_step
        self._started = time.perf_counter()
        self._tokens = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs:
            return
        seconds = time.perf_counter() - self._started
        tokens = float(logs.get("num_tokens", self._tokens))
        step_tokens = int(tokens - self._tokens)
        self._tokens = tokens
        row = {
            "step": int(state.global_step),
            "epoch": float(logs.get("epoch", state.epoch or 0.0)),
            "loss": float(logs["loss"]),
            "token_accuracy": float(logs.get("mean_token_accuracy", math.nan)),
            "learning_rate": float(logs.get("learning_rate", math.nan)),
            "grad_norm": float(logs.get("grad_norm", math.nan)),
            "tokens": step_tokens,
            "tokens_per_second": step_tokens / seconds if seconds > 0 else math.nan,
            "seconds": seconds,
        }
        self.rows.append(row)
        if self.on_step is not None:
            self.on_step(row, self.total)

    def on_train_begin(self, args, state, control, **kw):
        # a resumed Trainer takes the checkpoint's state, save interval included: this run's
        # --save-steps counts from here on
        state.save_steps = args.save_steps

    def on_save(self, args, state, control, **kw):
        # the Trainer calls this once the checkpoint's own files are written (and older ones
        # beyond save_total_limit removed): the marker that makes it complete comes last
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            text = json.dumps({"log": [r for r in self.rows if r["step"] <= state.global_step]})
            write_durably(folder / SFT_STATE, lambda tmp: tmp.write_text(text))

    @staticmethod
    def saved_rows(checkpoint: Path) -> list[dict[str, Any]]:
        return json.loads((checkpoint / SFT_STATE).read_text())["log"]


def sft_args(
    cfg: SFTConfig, folder: str, steps: int, device: str, bf16: bool, run_name: str | None = None
):
    from trl import SFTConfig as TRLConfig

    args: dict[str, Any] = dict(
        output_dir=folder,
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # a float below 1: that share of the steps
        max_steps=steps,
        per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch,
        max_length=cfg.max_length,
        completion_only_loss=True,  # the prompt is context, not a target
        use_cpu=device == "cpu",
        bf16=bf16,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,  # the one before stays until the newest is complete
        save_only_model=False,  # --resume needs the optimizer's, schedule's and RNG's state
        ignore_data_skip=False,
        report_to=report_to(cfg.report_to),
        run_name=run_name,  # <artifact>-<version>: the run as trackers show it
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )
    defaults = dict(  # rerec's choices that `--trl` may change
        lr_scheduler_type="cosine",
        disable_tqdm=True,
        log_level="warning",
    )
    # recomputing activations saves memory a 135M model on a CPU does not need, at about a
    # third more compute per step; on a GPU (bigger models) it stays on, as in `train`
    defaults |= activation_checkpointing(TRLConfig, device == "cuda")
    extra = check_extra("trl", TRLConfig, cfg.trl, own=args)
    return TRLConfig(**args, **(defaults | extra))


def resolve_precision(cfg: SFTConfig, device: str) -> str:
    """fp32 or bf16 for this run (see `stages.llm.generation`)."""
    from stages.llm.generation import resolve_precision as resolve

    return resolve(cfg.precision, device)


def sft_policy(
    store: ArtifactStore,
    cfg: SFTConfig,
    *,
    force: bool = False,
    resume: bool = False,
    command: str | None = None,
    on_step: Callable[[dict[str, Any], int], None] | None = None,
    on_prompts: Callable[[pl.DataFrame], None] | None = None,
) -> BuildResult:
    """Fine-tune on graph-written answers and store the policy. ``on_prompts`` receives the
    prompts' token counts per family (`prompt_token_stats`) once they are rendered;
    ``resume`` continues from the run folder's last checkpoint (refused when there is none)."""
    queries = store.resolve(cfg.queries, kind="queries")
    graph = store.input_of(queries, "graph")  # its facts write the targets
    model_art, model_path = resolve_model(store, cfg.model)
    inputs = [a for a in (queries, graph, model_art) if a is not None]
    warnings = store.check_mismatch(inputs, allow=cfg.allow_mismatch) + blas_warnings()
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg, device)
    train = read_split(
        queries, "train", families=cfg.families, limit=cfg.limit, seed=cfg.seed, part=cfg.part
    )
    name = cfg.artifact_name(queries.name)
    config = cfg.model_dump(mode="json")
    if model_art is None:
        from stages.llm.models import model_fingerprint

        config["model_fingerprint"] = model_fingerprint(model_path)
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * train.height / cfg.batch_size))
    report_to(cfg.report_to)  # an unknown or missing tracker fails before a model loads
    from trl import SFTConfig as TRLConfig

    check_extras(cfg, TRLConfig)  # so does a pass-through option that is not a field

    if not force and (done := store.built(name, config=config, inputs=inputs)) is not None:
        return done
    vid = store.planned_version(name, config=config, inputs=inputs)
    folder = store.run_folder(name, vid)
    checkpoint = store.last_checkpoint(folder, SFT_STATE) if resume else None
    if resume and checkpoint is None:
        raise UserError(f"--resume: no checkpoint in {folder} (nothing to resume)")

    def build(writer: ArtifactWriter) -> None:
        examples = build_examples(train, graph, cfg)
        writer.write_table("examples", examples.select(list(EXAMPLES.columns)))
        log, tokens_total, seconds, prompt_tokens = _fit(
            store,
            cfg,
            model_art,
            model_path,
            train,
            examples,
            writer,
            steps,
            device,
            precision,
            on_step,
            f"{name}-{vid}",
            folder,
            checkpoint,
        )
        writer.metrics["prompt_tokens"] = token_stats_metrics(prompt_tokens)
        if on_prompts is not None:
            on_prompts(prompt_tokens)
        writer.write_table("log", pl.DataFrame(log, schema=SFT_LOG.columns))
        policy = {
            "base_model": model_art.ref if model_art else model_path,
            "base_model_is_artifact": model_art is not None,
            "adapter": False,  # model/ holds full weights (a LoRA adapter merged in)
            "lora_adapter": "adapter" if cfg.lora else None,
            "algo": "sft",
            **rendering(cfg),
            "graph": graph.ref,
            "queries": queries.ref,
            "precision": precision,
        }
        writer.file("policy.json").write_text(json.dumps(policy, indent=2) + "\n")
        if log:
            tail = log[-min(10, len(log)) :]
            writer.metrics.update(
                steps=len(log),
                examples=examples.height,
                first_loss=log[0]["loss"],
                last_loss_mean10=sum(r["loss"] for r in tail) / len(tail),
                last_token_accuracy_mean10=sum(r["token_accuracy"] for r in tail) / len(tail),
                tokens_per_second=tokens_total / seconds if seconds else None,
                precision=precision,
            )
        writer.metrics["blas"] = blas_reproducibility()

    result = store.build(
        name,
        config=config,
        inputs=inputs,
        build=build,
        force=force,
        command=command,
        warnings=warnings,
    )
    if not result.skipped:
        store.remove_run_folder(name, folder)
    return result


def check_lengths(
    examples: pl.DataFrame, tokenizer: Any, max_length: int, truncation_mode: str = "keep_start"
) -> None:
    """Refuse examples longer than ``max_length`` tokens (prompt and target, as the chat
    template joins them): TRL cuts them at the end (``keep_start``), so their targets, answer
    included, would be lost, or at the start (``keep_end``), losing the request, without a
    word."""
    texts = [
        tokenizer.apply_chat_template(
            [*json.loads(p), {"role": "assistant", "content": c}], tokenize=False
        )
        for p, c in zip(examples["prompt"], examples["completion"], strict=True)
    ]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    over = [n for n in lengths if n > max_length]
    cut = "the start of their prompts" if truncation_mode == "keep_end" else "their targets"
    if over:
        raise UserError(
            f"{len(over):,} of {len(lengths):,} sft examples are longer than --max-length "
            f"{max_length} tokens (prompt and target; longest {max(over):,}), and TRL would cut "
            f"{cut} off: raise --max-length to {max(over):,} or shorten the prompts "
            "(--candidate-facts compact or none)"
        )


def _fit(
    store: ArtifactStore,
    cfg: SFTConfig,
    model_art: Artifact | None,
    model_path: str,
    train: pl.DataFrame,
    examples: pl.DataFrame,
    writer: ArtifactWriter,
    steps: int,
    device: str,
    precision: str,
    on_step: Callable[[dict[str, Any], int], None] | None,
    run_name: str,
    folder: Path,
    checkpoint: Path | None,
) -> tuple[list[dict[str, Any]], int, float, pl.DataFrame]:
    """Train (in run folder ``folder``, from ``checkpoint`` when resuming) and save the model
    into the artifact; the step log, tokens, seconds and the prompts' token counts."""
    from trl import SFTTrainer

    quiet_libraries()
    model, tokenizer = load_model_folder(
        model_path, torch.bfloat16 if device == "cuda" else torch.float32
    )
    prompt_tokens = prompt_token_stats(train, tokenizer, **rendering(cfg))
    check_lengths(
        examples, tokenizer, cfg.max_length, str(cfg.trl.get("truncation_mode", "keep_start"))
    )
    tokenizer.padding_side = "right"  # training: pad after the completion
    dataset = Dataset.from_dict(
        {
            "prompt": [json.loads(p) for p in examples["prompt"]],
            "completion": [[{"role": "assistant", "content": c}] for c in examples["completion"]],
        }
    )
    peft_config = lora_config(cfg)
    log = StepLog(steps, on_step, StepLog.saved_rows(checkpoint) if checkpoint else None)
    if checkpoint is None:
        shutil.rmtree(folder, ignore_errors=True)  # what a run without --resume left
    folder.mkdir(parents=True, exist_ok=True)
    score_label_positions_only()  # the loss scores the targets only: on a CPU too
    torch.manual_seed(cfg.seed)
    trainer = SFTTrainer(
        model=model,
        args=sft_args(cfg, str(folder), steps, device, precision == "bf16", run_name),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[log],
    )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:
        last = store.last_checkpoint(folder, SFT_STATE)
        if last is None:
            raise UserError(
                f"interrupted at step {trainer.state.global_step}, before the first checkpoint "
                f"(every {cfg.save_steps} steps); nothing to resume"
            ) from None
        raise UserError(
            f"interrupted at step {trainer.state.global_step}; the checkpoint of step "
            f"{last.name.removeprefix('checkpoint-')} is in {folder}; rerun the same command "
            "with --resume to continue from it"
        ) from None
    keep_tensorboard_logs(folder, store.root, run_name)
    net = trainer.model
    if cfg.lora:
        net.save_pretrained(writer.file("adapter"), safe_serialization=True)
        portable_adapter(writer.file("adapter"), model_art, model_path)
        net = net.merge_and_unload()
    net = net.to(torch.float32 if device == "cpu" else net.dtype)
    net.save_pretrained(writer.file("model"), safe_serialization=True)
    tokenizer.padding_side = "left"  # generation pads on the left
    tokenizer.save_pretrained(writer.file("model"))
    # over every step, those a resumed run took from its checkpoint included
    tokens_total = sum(int(r["tokens"]) for r in log.rows)
    step_seconds = sum(float(r["seconds"]) for r in log.rows)
    return log.rows, tokens_total, step_seconds, prompt_tokens
