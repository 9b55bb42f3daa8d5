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

import numpy as np
import polars as pl

from schemas.eval import EVAL_METRICS
from stages.errors import UserError
from stages.eval_config import EvalConfig
from stages.prompts import (
    prompt_lengths,
    prompt_options,
    render_messages,
    token_stats,
    token_stats_metrics,
)
from stages.queries_reader import read_split
from stages.rewards import RewardIndex, RewardWeights, parse_boxed, score_batch
from stages.store import Artifact, ArtifactStore, ArtifactWriter, BuildResult

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
# baselines


def popularity(graph: Artifact) -> dict[int, int]:
    counts = graph.read("interactions").group_by("item_id").len()
    return dict(zip(counts["item_id"].to_list(), counts["len"].to_list(), strict=True))


def baseline_predictions(
    kind: str, df: pl.DataFrame, graph: Artifact, cf: Artifact | None, seed: int
) -> list[int]:
    """The candidate item each baseline picks for each query row."""
    pop = popularity(graph)
    rows = df.to_dicts()

    def most_popular(cands: list[int]) -> int:
        return max(cands, key=lambda i: (pop.get(i, 0), -cands.index(i)))

    if kind == "random":
        rng = np.random.default_rng(seed)
        return [
            int(r["candidate_item_ids"][rng.integers(len(r["candidate_item_ids"]))]) for r in rows
        ]
    if kind == "popular":
        return [most_popular(list(r["candidate_item_ids"])) for r in rows]
    if kind == "lightgcn":
        if cf is None:
            raise UserError("the lightgcn baseline needs a cf artifact: run `rerec pretrain-cf`")
        users = cf.read("user_embeddings")
        items = cf.read("item_embeddings")
        u_index = {int(u): n for n, u in enumerate(users["user_id"].to_list())}
        i_index = {int(i): n for n, i in enumerate(items["item_id"].to_list())}
        U, V = users["embedding"].to_numpy(), items["embedding"].to_numpy()
        picks = []
        for r in rows:
            cands = list(r["candidate_item_ids"])
            u = u_index.get(int(r["user_id"]))
            if u is None or any(c not in i_index for c in cands):
                picks.append(most_popular(cands))
                continue
            scores = V[[i_index[c] for c in cands]] @ U[u]
            picks.append(int(cands[int(np.argmax(scores))]))
        return picks
    if kind == "attribute":
        edges = graph.read("item_attributes")
        attrs: dict[int, set[int]] = {
            int(i): set(a) for i, a in edges.group_by("item_id").agg("attr_id").iter_rows()
        }
        picks = []
        for r in rows:
            cands = list(r["candidate_item_ids"])
            wanted = {c["attr_id"] for c in (r["conditions"] or []) if c["attr_id"] is not None}
            if not wanted:
                picks.append(most_popular(cands))
                continue
            picks.append(
                max(
                    cands,
                    key=lambda i: (
                        len(attrs.get(i, set()) & wanted),
                        pop.get(i, 0),
                        -cands.index(i),
                    ),
                )
            )
        return picks
    raise ValueError(f"unknown baseline {kind!r}")


def boxed(df: pl.DataFrame, items: list[int]) -> list[str]:
    out = []
    for r, item in zip(df.iter_rows(named=True), items, strict=True):
        title = r["candidate_titles"][list(r["candidate_item_ids"]).index(item)]
        out.append(f"\\boxed{{{title}}}")
    return out


# ---------------------------------------------------------------------------------------------
# scoring and metrics


def score_predictions(
    df: pl.DataFrame,
    completions: list[str],
    tokens: list[int],
    index: RewardIndex,
    weights: RewardWeights,
) -> pl.DataFrame:
    queries = df.select(
        "query_id", "candidate_item_ids", "candidate_titles", "positive_item_ids"
    ).to_dicts()
    parts = score_batch(completions, queries, index, weights)
    return pl.DataFrame(
        {
            "query_id": df["query_id"],
            "domain": df["domain"],
            "family": df["family"],
            "completion": completions,
            "answers": [parse_boxed(c) for c in completions],
            "predicted_item_ids": parts["predicted"],
            "reward": parts["reward"],
            "format": parts["format"],
            "ndcg": parts["ndcg"],
            "qas": parts["qas"],
            "pas": parts["pas"],
            "correct": parts["correct"],
            "completion_tokens": tokens,
        },
        schema_overrides={
            "answers": pl.List(pl.String),
            "predicted_item_ids": pl.List(pl.Int32),
            "completion_tokens": pl.Int32,
        },
    )


def metric_values(pred: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        "accuracy": pred["correct"].cast(pl.Float64).to_numpy(),
        "ndcg": pred["ndcg"].to_numpy(),
        "qas": pred["qas"].to_numpy(),
        "pas": pred["pas"].to_numpy(),
        "valid_format": (pred["format"] > 0).cast(pl.Float64).to_numpy(),
        "completion_tokens": pred["completion_tokens"].cast(pl.Float64).to_numpy(),
    }


def bootstrap_means(
    values: dict[str, np.ndarray], resamples: int, rng: np.random.Generator
) -> dict[str, tuple[float, float, float]]:
    """Mean and 95% percentile-bootstrap interval of each metric; the same resampled query
    sets serve every metric."""
    n = len(next(iter(values.values())))
    idx = rng.integers(0, n, size=(resamples, n)) if resamples and n else None
    out = {}
    for name, v in values.items():
        mean = float(v.mean()) if n else float("nan")
        if idx is None:
            out[name] = (mean, float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(v[idx].mean(axis=1), [2.5, 97.5])
            out[name] = (mean, float(lo), float(hi))
    return out


def metrics_table(pred: pl.DataFrame, resamples: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    groups = [
        (d, f, pred.filter((pl.col("domain") == d) & (pl.col("family") == f)))
        for d, f in pred.select("domain", "family").unique().sort("domain", "family").iter_rows()
    ]
    groups += [
        (d, "all", pred.filter(pl.col("domain") == d)) for d in sorted(pred["domain"].unique())
    ]
    for domain, family, part in groups:
        stats = bootstrap_means(metric_values(part), resamples, rng)
        for name in EVAL_METRICS:
            mean, lo, hi = stats[name]
            rows.append(
                {
                    "domain": domain,
                    "family": family,
                    "metric": name,
                    "value": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": part.height,
                }
            )
    return pl.DataFrame(rows)


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
    command: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_prompts: Callable[[pl.DataFrame], None] | None = None,
) -> BuildResult:
    """Evaluate and store the `eval` artifact; ``on_prompts`` receives the prompts' token counts
    per family (`prompt_token_stats`) once they are rendered (not for baselines)."""
    queries = store.resolve(cfg.queries, kind="queries")
    graph = store.input_of(queries, "graph")
    cf = optional_cf(store, cfg.cf, graph)
    df = read_split(queries, cfg.split, families=cfg.families, limit=cfg.limit, seed=cfg.seed)
    inputs: list[Artifact] = [queries, graph, *([cf] if cf else [])]
    config: dict[str, Any] = cfg.model_dump(mode="json")
    gen = None

    if cfg.source == "baseline":
        warnings = store.check_mismatch(inputs, allow=cfg.allow_mismatch)
        label = str(cfg.baseline)
        k, options = cfg.k or 1, prompt_options({})
    else:
        from stages.models import require_vllm

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
            from stages.models import resolve_model

            model_art, _ = resolve_model(store, str(cfg.model))
            info = {}
        warnings += store.check_mismatch(
            [*inputs, *([model_art] if model_art else [])], allow=cfg.allow_mismatch
        )
        if model_art is not None:
            inputs.append(model_art)
        else:
            from stages.models import model_fingerprint

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
        from stages.generation import load_generator  # torch, transformers: only to generate

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

            completions, tokens = run_generation(gen, conversations, cfg, progress)
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
            **({"precision": gen.precision} if gen else {}),
            **{
                f"{d}/{m}": round(v, 4)
                for d, m, v in overall.select("domain", "metric", "value").iter_rows()
            },
        )

    return store.build(
        name,
        config=config,
        inputs=inputs,
        build=build,
        force=force,
        command=command,
        warnings=warnings,
    )


def run_generation(
    gen: Any, conversations: list, cfg: EvalConfig, progress: Callable[[int], None]
) -> tuple[list[str], list[int]]:
    from stages.generation import generate, generate_vllm

    if cfg.use_vllm:
        from stages.generation import merged_folder

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
    )
