"""`rerec eval`: a policy, a base model or a baseline on a `queries` split, scored by the same
reward code as training; metrics per domain × family with percentile-bootstrap 95% intervals.

Baselines answer without an LLM and go through the same parsing and scoring (their answer is
`\\boxed{title}`):

- random: a uniformly drawn candidate (seeded);
- popular: the candidate with the most interactions in the graph;
- lightgcn: the candidate with the highest LightGCN score for the query's user (users the
  `cf` model never saw fall back to popular). The `cf` model was trained on a random split of
  all interactions, so it may have seen a test positive: read it as an optimistic reference;
- attribute: the candidate with most of the request's stated conditions (true attribute values,
  including those reached through a referenced item), ties broken by popularity; an upper
  bound for explicit requests; interest requests have no conditions and fall back to popular.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import polars as pl

from stages.core.artifact import Artifact, ArtifactWriter, BuildResult
from stages.core.errors import UserError
from stages.core.numerics import blas_reproducibility, blas_warnings
from stages.core.store import ArtifactStore
from stages.eval.baselines import baseline_predictions, boxed
from stages.eval.config import EvalConfig
from stages.eval.metrics import metrics_table, score_predictions
from stages.llm.prompts import (
    prompt_lengths,
    prompt_options,
    render_messages,
    token_stats,
    token_stats_metrics,
)
from stages.llm.saved import SavedBatches, has_saved
from stages.queries.reader import read_split
from stages.rewards.dual_graph import RewardIndex, RewardWeights

# ---------------------------------------------------------------------------------------------
# inputs


def optional_cf(store: ArtifactStore, name: str | None, graph: Artifact) -> Artifact | None:
    cf_name = name or "cf" + graph.name.removeprefix("graph")
    if name is None and not store.exists(cf_name):
        return None
    return store.resolve(cf_name)


def check_same_graph(policy_info: dict[str, Any], graph: Artifact, allow: bool) -> list[str]:
    """The policy was trained on queries from one graph version; evaluating on another (even
    another graph, for transfer) makes titles, attributes and candidates disagree with what it
    learned. Returns the warning for the manifest when allowed."""
    trained = policy_info.get("graph")
    if trained is None or trained == graph.ref:
        return []
    message = (
        f"the policy was trained on queries from {trained}, these queries come from {graph.ref}"
    )
    if not allow:
        raise UserError(message + "; pass --allow-mismatch to evaluate anyway")
    print(f"warning: {message}", file=sys.stderr)
    return [message]


# ---------------------------------------------------------------------------------------------
# the stage


def default_name(cfg: EvalConfig, queries: Artifact, label: str) -> str:
    if cfg.output:
        return cfg.output
    suffix = queries.name.removeprefix("queries")
    name = f"eval-{label}"
    return name if not suffix or name.endswith(suffix) else name + suffix


def evaluate(
    store: ArtifactStore,
    cfg: EvalConfig,
    *,
    force: bool = False,
    resume: bool = False,
    command: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_prompts: Callable[[pl.DataFrame], None] | None = None,
) -> BuildResult:
    """Evaluate and store the `eval` artifact; ``on_prompts`` receives the prompts' token counts
    per family (`prompt_token_stats`) once they are rendered (not for baselines).

    An LLM's answers are saved batch by batch in the run folder (`SavedBatches`) while it
    generates; interrupted, the eval says so, and ``resume`` takes the saved batches instead of
    generating them again (refused when nothing is saved). The folder goes once the artifact is
    written."""
    queries = store.resolve(cfg.queries, kind="queries")
    graph = store.input_of(queries, "graph")
    cf = optional_cf(store, cfg.cf, graph)
    df = read_split(queries, cfg.split, families=cfg.families, limit=cfg.limit, seed=cfg.seed)
    inputs: list[Artifact] = [queries, graph, *([cf] if cf else [])]
    config: dict[str, Any] = cfg.model_dump(mode="json")
    if cfg.temperature > 0:
        # sampled answers come from one seed per batch (`generate`) since resumable evals:
        # other contents than the same config gave before, so another version id
        config["seeds"] = "per batch"
    gen = None
    saved: SavedBatches | None = None

    if cfg.source == "baseline":
        if resume:
            raise UserError("--resume: a baseline generates nothing (nothing to resume)")
        warnings = store.check_mismatch(inputs, allow=cfg.allow_mismatch)
        label = str(cfg.baseline)
        k, options = cfg.k or 1, prompt_options({})
    else:
        from stages.llm.models import require_vllm

        if cfg.use_vllm:
            require_vllm()
        policy = (cfg.policy or "policy") if cfg.source == "policy" else None
        # Inputs that meet must share their ancestors: checked before a model loads.
        warnings = []
        if policy is not None:
            model_art = store.resolve(policy, kind="policy")
            info = json.loads(model_art.file("policy.json").read_text())
            warnings += check_same_graph(info, graph, cfg.allow_mismatch)
        else:
            from stages.llm.models import resolve_model

            model_art, _ = resolve_model(store, str(cfg.model))
            info = {}
        warnings += store.check_mismatch(
            [*inputs, *([model_art] if model_art else [])], allow=cfg.allow_mismatch
        )
        warnings += blas_warnings()
        if model_art is not None:
            inputs.append(model_art)
        else:
            from stages.llm.models import model_fingerprint

            config["model_fingerprint"] = model_fingerprint(str(cfg.model))
        label = model_art.name if policy is not None else "base"
        k = cfg.k or int(info.get("k", 1))
        # Prompt options not given take the policy's (a base model's: the defaults).
        given = {n: v for n, v in prompt_options(cfg).items() if getattr(cfg, n) is not None}
        options = {**prompt_options(info), **given}

    name = default_name(cfg, queries, label)
    if cfg.source != "baseline":
        # a rerun returns before the model loads (and its adapter merges)
        if not force and (done := store.built(name, config=config, inputs=inputs)) is not None:
            return done
        folder = store.run_folder(name, store.planned_version(name, config=config, inputs=inputs))
        if resume and (cfg.use_vllm or not has_saved(folder)):
            raise UserError(f"--resume: no saved answers in {folder} (nothing to resume)")
        if not cfg.use_vllm:  # vLLM answers every prompt in one call: nothing to save
            saved = SavedBatches(folder, resume=resume)
        from stages.llm.generation import load_generator  # torch, transformers: only to generate

        gen = load_generator(
            store, policy=policy, model=cfg.model, device=cfg.device, precision=cfg.precision
        )

    def build(writer: ArtifactWriter) -> None:
        if gen is None:
            picks = baseline_predictions(str(cfg.baseline), df, graph, cf, cfg.seed)
            completions, tokens = boxed(df, picks), [0] * df.height
        else:
            conversations = [render_messages(q, k=k, **options) for q in df.to_dicts()]
            prompt_tokens = token_stats(
                df["family"].to_list(), prompt_lengths(conversations, gen.tokenizer)
            )
            writer.metrics["prompt_tokens"] = token_stats_metrics(prompt_tokens)
            if on_prompts is not None:
                on_prompts(prompt_tokens)
            done = [0]

            def progress(n: int) -> None:
                done[0] += n
                if on_batch is not None:
                    on_batch(done[0], len(conversations))

            completions, tokens = run_generation(gen, conversations, cfg, progress, saved)
        index = RewardIndex.from_tables(
            graph.read("item_attributes").select("item_id", "attr_id"),
            cf.read("item_embeddings") if cf else None,
        )
        pred = score_predictions(df, completions, tokens, index, RewardWeights(k=k))
        table = metrics_table(pred, cfg.bootstrap, cfg.seed)
        writer.write_table("predictions", pred)
        writer.write_table("metrics", table)
        about = {
            "label": label,
            "source": cfg.source,
            "evaluated": gen.label if gen else f"baseline:{cfg.baseline}",
            "policy": gen.policy.ref if gen and gen.policy else None,
            "queries": queries.ref,
            "split": cfg.split,
            "k": k,
            **({} if gen is None else options),  # the prompt options used
            "greedy": cfg.temperature == 0,
            "pas": cf is not None,
            "precision": gen.precision if gen else None,  # as resolved on this machine
        }
        writer.file("eval.json").write_text(json.dumps(about, indent=2) + "\n")
        overall = table.filter(pl.col("family") == "all")
        writer.metrics.update(
            queries=df.height,
            **({"precision": gen.precision, "blas": blas_reproducibility()} if gen else {}),
            **{
                f"{d}/{m}": round(v, 4)
                for d, m, v in overall.select("domain", "metric", "value").iter_rows()
            },
        )

    try:
        result = store.build(
            name,
            config=config,
            inputs=inputs,
            build=build,
            force=force,
            command=command,
            warnings=warnings,
        )
    except KeyboardInterrupt:
        if saved is None or not saved.answers:
            raise UserError("interrupted before a batch finished; nothing to resume") from None
        raise UserError(
            f"interrupted after {saved.answers} of {df.height} answers; they are saved in "
            f"{saved.folder}; rerun the same command with --resume to continue"
        ) from None
    if saved is not None and not result.skipped:
        store.remove_run_folder(name, saved.folder)
    return result


def run_generation(
    gen: Any,
    conversations: list,
    cfg: EvalConfig,
    progress: Callable[[int], None],
    saved: SavedBatches | None = None,
) -> tuple[list[str], list[int]]:
    from stages.llm.generation import generate, generate_vllm

    if cfg.use_vllm:
        from stages.llm.generation import merged_folder

        with merged_folder(gen) as path:
            return generate_vllm(
                path,
                conversations,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                seed=cfg.seed,
            )
    return generate(
        gen,
        conversations,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
        on_batch=progress,
        saved=saved,
    )
