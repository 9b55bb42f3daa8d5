"""Reward throughput on realistic completions (issue target: >= 50,000 completions/s).

Builds completions for real ml-100k test queries (three reasoning paragraphs naming candidates,
then a boxed answer: 40% right, 40% a wrong candidate, 10% fuzzy-misspelled, 10% unboxed), scores
them with the in-process dual-graph reward (graph attributes + LightGCN embeddings), and prints
the median completions/s over repeats; also the RAAE segment rewards per completion.

    python benchmarks/bench_rewards.py [--n 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stages.core.store import ArtifactStore  # noqa: E402
from stages.rewards.dual_graph import RewardIndex, RewardWeights, score_batch  # noqa: E402
from stages.rl.raae import segment_rewards  # noqa: E402


def completions_for(queries: list[dict], rng: np.random.Generator) -> list[str]:
    out = []
    for q in queries:
        titles = q["candidate_titles"]
        right = titles[q["positive_index"]]
        wrong = titles[(q["positive_index"] + 1) % len(titles)]
        u = rng.random()
        answer = right if u < 0.4 else wrong if u < 0.8 else right[:-8] + "x" if u < 0.9 else None
        body = (
            f"The request asks for something specific. {wrong} does not seem to fit it.\n\n"
            f"{right} looks closer: its people and genre match what was asked.\n\n"
            f"Weighing both, I settle on one of them."
        )
        out.append(body + (f"\n\n\\boxed{{{answer}}}" if answer else "\n\nMy answer: " + right))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=REPO / "workdir")
    args = ap.parse_args()
    store = ArtifactStore(args.workdir)
    graph, cf, queries = store.resolve("graph"), store.resolve("cf"), store.resolve("queries")
    index = RewardIndex.from_tables(graph.read("item_attributes"), cf.read("item_embeddings"))
    rows = queries.read("queries").to_dicts()
    rng = np.random.default_rng(0)
    batch = [rows[i] for i in rng.integers(0, len(rows), args.n)]
    texts = completions_for(batch, rng)
    weights = RewardWeights()
    score_batch(texts[:1000], batch[:1000], index, weights)  # warm caches of candidate indices
    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        parts = score_batch(texts, batch, index, weights)
        rates.append(args.n / (time.perf_counter() - started))
    raae = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for text, q, r in zip(texts, batch, parts["reward"], strict=True):
            segment_rewards(text, float(r), None if q is None else q["candidate_titles"][0])
        raae.append(args.n / (time.perf_counter() - started))
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(
        f"reward: median {statistics.median(rates):,.0f} completions/s over {args.repeats} "
        f"runs of {args.n:,} (target >= 50,000): "
        f"{'met' if statistics.median(rates) >= 50_000 else 'MISSED'}; mean reward "
        f"{parts['reward'].mean():.3f}, accuracy {parts['correct'].mean():.3f}, "
        f"QAS {parts['qas'].mean():.3f}, PAS {parts['pas'].mean():.3f}"
    )
    print(f"RAAE segment rewards: median {statistics.median(raae):,.0f} completions/s")


if __name__ == "__main__":
    main()
