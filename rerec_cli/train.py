"""`rerec train`: GRPO / ReRec / REINFORCE++ on the training queries; writes a policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.output import out
from rerec_cli.progress import StepProgress, evenly_spaced, print_prompt_tokens
from stages.config import field_help, resolve_config
from stages.train_config import TrainConfig

H = TrainConfig


def _opt(name: str, *flags: str, **kw: Any) -> Any:
    return typer.Option(*flags, help=field_help(H, name), **kw)


@app.command("train")
def train_command(
    queries: Annotated[str | None, _opt("queries")] = None,
    model: Annotated[str | None, _opt("model")] = None,
    output: Annotated[str | None, _opt("output")] = None,
    algo: Annotated[str | None, _opt("algo")] = None,
    raae: Annotated[bool | None, _opt("raae", "--raae/--no-raae")] = None,
    qas: Annotated[bool | None, _opt("qas", "--qas/--no-qas")] = None,
    pas: Annotated[bool | None, _opt("pas", "--pas/--no-pas")] = None,
    curriculum: Annotated[bool | None, _opt("curriculum", "--curriculum/--no-curriculum")] = None,
    graph: Annotated[str | None, _opt("graph")] = None,
    cf: Annotated[str | None, _opt("cf")] = None,
    allow_mismatch: Annotated[bool | None, _opt("allow_mismatch", "--allow-mismatch")] = None,
    steps: Annotated[int | None, _opt("steps")] = None,
    epochs: Annotated[int | None, _opt("epochs")] = None,
    limit: Annotated[int | None, _opt("limit")] = None,
    families: Annotated[list[str] | None, _opt("families", "--family")] = None,
    prompts_per_step: Annotated[int | None, _opt("prompts_per_step")] = None,
    num_generations: Annotated[
        int | None, _opt("num_generations", "--num-generations", "-G")
    ] = None,
    micro_batch: Annotated[int | None, _opt("micro_batch")] = None,
    max_completion_length: Annotated[int | None, _opt("max_completion_length")] = None,
    temperature: Annotated[float | None, _opt("temperature")] = None,
    lr: Annotated[float | None, _opt("lr")] = None,
    beta: Annotated[float | None, _opt("beta")] = None,
    lora: Annotated[bool | None, _opt("lora", "--lora/--full")] = None,
    lora_r: Annotated[int | None, _opt("lora_r")] = None,
    w_qas: Annotated[float | None, _opt("w_qas")] = None,
    w_pas: Annotated[float | None, _opt("w_pas")] = None,
    w_penalty: Annotated[float | None, _opt("w_penalty")] = None,
    advantage: Annotated[str | None, _opt("advantage")] = None,
    tau: Annotated[float | None, _opt("tau")] = None,
    k: Annotated[int | None, _opt("k")] = None,
    candidate_facts: Annotated[
        str | None, _opt("candidate_facts", "--candidate-facts", metavar="none|compact|full")
    ] = None,
    named_facts: Annotated[
        bool | None, _opt("named_facts", "--named-facts/--no-named-facts")
    ] = None,
    history: Annotated[int | None, _opt("history", "--history", metavar="N")] = None,
    save_steps: Annotated[int | None, _opt("save_steps")] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    device: Annotated[str | None, _opt("device")] = None,
    precision: Annotated[str | None, _opt("precision")] = None,
    use_vllm: Annotated[bool | None, _opt("use_vllm", "--use-vllm")] = None,
    vllm_mode: Annotated[str | None, _opt("vllm_mode")] = None,
    tensorboard: Annotated[bool | None, _opt("tensorboard", "--tensorboard")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of options.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a recommendation policy with GRPO on TRL (LoRA by default): dual-graph rewards,
    RAAE token-level advantages and the online curriculum (--algo rerec), or the grpo and
    reinforce++ baselines. Scale out with `accelerate launch -m rerec_cli train ...`."""
    overrides = {k_: v for k_, v in locals().items() if k_ not in _NOT_CONFIG}
    cfg = resolve_config(TrainConfig, section="train", config_file=config, overrides=overrides)
    from stages.train import train_policy  # torch, transformers, TRL: only when training

    with StepProgress("training", _train_stats, quiet) as on_step:
        result = train_policy(
            state.store,
            cfg,
            force=force,
            resume=resume,
            command=command_line(),
            on_step=on_step,
            on_prompts=None if quiet else print_prompt_tokens,
        )
    art = result.artifact
    m = art.manifest.metrics
    if result.skipped:
        out.print(f"[bold]{art.ref}[/bold] (already trained; --force to retrain)")
    else:
        out.print(
            f"[bold]{art.ref}[/bold]: {m.get('steps', 0)} steps over {m.get('epochs', 0)} "
            f"epoch(s), {m.get('training_queries', 0):,} training queries, "
            f"{m.get('median_seconds_per_step', 0):.2f} s/step (median)"
        )
    out.print(reward_curve(art.read("log")))


_NOT_CONFIG = {"config", "resume", "force", "quiet"}


def _train_stats(row: dict[str, Any]) -> str:
    return f"reward {row['reward']:.3f}  accuracy {row['accuracy']:.2f}  epoch {row['epoch']}"


def reward_curve(log: pl.DataFrame, rows: int = 20) -> Table:
    """The training curve as a table (at most ``rows`` evenly spaced steps, always the last)."""
    table = Table(
        title="training curve (means over each step's completions; group sd: the spread of "
        "rewards within a prompt's group, which is what GRPO learns from)"
    )
    columns = {  # heading -> log column
        "reward": "reward",
        "group sd": "reward_std",
        "accuracy": "accuracy",
        "ndcg": "ndcg",
        "qas": "qas",
        "pas": "pas",
        "format ok": "valid_format",
        "penalised": "penalised_token_share",
        "kl": "kl",
    }
    for col in ("step", "epoch", *columns):
        table.add_column(col, justify="right")
    for r in evenly_spaced(log, rows).iter_rows(named=True):
        table.add_row(
            str(r["step"]),
            str(r["epoch"]),
            *("—" if r.get(c) is None else f"{r[c]:.3f}" for c in columns.values()),
        )
    return table
