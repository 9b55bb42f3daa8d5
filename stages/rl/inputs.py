"""What `rerec train` reads: the query split, its graph, the CF embeddings and the starting
model, checked to come from the same ancestors; and the TRL dataset of the train queries."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from datasets import Dataset

from stages.core.artifact import Artifact
from stages.core.errors import UserError
from stages.core.numerics import blas_warnings
from stages.core.store import ArtifactStore
from stages.llm.models import resolve_model
from stages.llm.prompts import prompt_options, render_messages
from stages.queries.reader import read_split
from stages.rl.config import TrainConfig

QUERY_COLUMNS = (
    "query_id",
    "family",
    "candidate_item_ids",
    "candidate_titles",
    "positive_item_ids",
)


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
    warnings = (
        store.check_mismatch(
            [a for a in (queries, graph, cf, model_artifact) if a is not None],
            allow=cfg.allow_mismatch,
        )
        + blas_warnings()
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
