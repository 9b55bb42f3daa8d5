"""A toy workdir for the training and evaluation tests: graph, LightGCN embeddings, query
splits, and a tiny model whose tokenizer was trained on the toy prompts."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl

from stages.cf.config import PretrainCFConfig
from stages.core.store import ArtifactStore
from stages.llm.prompts import SYSTEM_PROMPT, render_messages, render_user_message
from stages.queries.config import MakeQueriesConfig
from stages.queries.stage import make_queries
from tests.test_make_queries import build_toy_graph, toy_catalogue
from tests.tiny_llm import warm_up, write_tiny_llm


def build_toy_workdir(root: Path) -> tuple[ArtifactStore, Path]:
    from stages.cf.stage import pretrain_cf

    store = ArtifactStore(root / "workdir")
    build_toy_graph(store, root, toy_catalogue())
    pretrain_cf(store, PretrainCFConfig(epochs=3, embedding_dim=8, batch_size=256))
    make_queries(
        store,
        MakeQueriesConfig(train_size=6, valid_size=2, test_size=4, candidates=5, seed=1),
    )
    queries = store.resolve("queries").read("queries")
    corpus = [SYSTEM_PROMPT, "\\boxed{Film 1}\n\nI think so.", *queries["text"].to_list()]
    corpus += [render_user_message(q) for q in queries.to_dicts()]
    corpus += pl.Series(queries["candidate_titles"].explode()).unique().to_list()
    model = write_tiny_llm(root / "tiny-llm", corpus)
    warm_up(model, answer_transcripts(queries, model))
    return store, model


def answer_transcripts(queries: pl.DataFrame, model: Path) -> list[str]:
    """Chat transcripts that answer each training query with a random candidate, with a
    reasoning paragraph that names it: what the warmed-up tiny model learns to imitate."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    rng = random.Random(0)
    texts = []
    for q in queries.filter(pl.col("split") == "train").to_dicts():
        for _ in range(4):
            title = rng.choice(q["candidate_titles"])
            messages = render_messages(q)
            messages.append(
                {"role": "assistant", "content": f"{title} fits.\n\n\\boxed{{{title}}}"}
            )
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts
