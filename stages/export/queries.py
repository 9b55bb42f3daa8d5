"""A query split as a dataset any trainer reads as it is: one Parquet file per split, with the
chat `prompt` (system and user messages, by the renderer `rerec sft`, `train` and `eval` use,
with the prompt options given) and the columns a reward function needs, in the conversational
prompt format of TRL's GRPOTrainer and SFTTrainer (`prompt` + `completion`):

    query_id, family, split, prompt (messages), completion (the answer as a message:
    `\\boxed{Title (Year)}` of the first ground truth), candidate_item_ids, candidate_titles,
    positive_item_ids, positive_titles

    from datasets import load_dataset
    train = load_dataset("parquet", data_files="DIR/train.parquet")["train"]
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from schemas.queries import SPLITS
from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.export.policy import check_destination
from stages.llm.prompts import render_messages

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})


def export_queries(
    store: ArtifactStore,
    ref: str,
    out: Path,
    *,
    splits: list[str] | None = None,
    k: int = 1,
    candidate_facts: str = "none",
    named_facts: bool = False,
    history: int = 0,
) -> dict[str, int]:
    """Write ``out/<split>.parquet`` (and `rerec.json`: the queries artifact and the prompt
    options); rows per split."""
    queries = store.resolve(ref, kind="queries")
    out = out.expanduser().absolute()
    check_destination(out)
    options: dict[str, Any] = dict(
        k=k, candidate_facts=candidate_facts, named_facts=named_facts, history=history
    )
    unknown = [s for s in splits or [] if s not in SPLITS]
    if unknown:
        raise UserError(f"--split {unknown[0]}: not a split ({', '.join(SPLITS)})")
    table = queries.read("queries")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    counts = {}
    try:
        for split in splits or list(SPLITS):
            df = table.filter(pl.col("split") == split).sort("query_id")
            rows = df.to_dicts()
            titles = [
                {i: t for i, t in zip(r["candidate_item_ids"], r["candidate_titles"], strict=True)}
                for r in rows
            ]
            positives = [
                [t[i] for i in r["positive_item_ids"]] for r, t in zip(rows, titles, strict=True)
            ]
            prompt = [render_messages(r, **options) for r in rows]
            completion = [
                [{"role": "assistant", "content": f"\\boxed{{{p[0]}}}"}] if p else []
                for p in positives
            ]
            pl.DataFrame(
                {
                    "query_id": df["query_id"],
                    "family": df["family"],
                    "split": df["split"],
                    "prompt": pl.Series(prompt, dtype=pl.List(MESSAGE)),
                    "completion": pl.Series(completion, dtype=pl.List(MESSAGE)),
                    "candidate_item_ids": df["candidate_item_ids"],
                    "candidate_titles": df["candidate_titles"],
                    "positive_item_ids": df["positive_item_ids"],
                    "positive_titles": pl.Series(positives, dtype=pl.List(pl.String)),
                }
            ).write_parquet(tmp / f"{split}.parquet")
            counts[split] = df.height
        about = {"queries": queries.ref, "content_hash": queries.manifest.content_hash, **options}
        (tmp / "rerec.json").write_text(json.dumps(about, indent=2) + "\n")
        check_destination(out)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
