"""Benchmark `rerec pretrain-cf` against RecBole 1.2.1's LightGCN, in the same run.

1. ml-100k, RecBole's protocol and configuration on both sides: per-user random 80/10/10 split,
   embedding 64, 2 layers, Adam lr 1e-3, batch 2048, one uniform negative, reg 1e-4, full
   ranking, early stopping on valid NDCG@10 with patience 10. Prints test NDCG@10 / Recall@20
   and the median training seconds per epoch of each, and their ratio.
   RecBole runs in a throwaway virtualenv given by --recbole-python (see recbole_lightgcn.py).
2. Seconds per epoch on an ML-1M-sized synthetic graph (6,040 users x 3,706 items x 1M
   interactions, Zipf popularity), through the real `rerec build-graph` and `rerec pretrain-cf`.
3. PAS sanity: mean cosine of the learned item embeddings for pairs co-consumed by many users
   versus random pairs.

    python benchmarks/bench_pretrain_cf.py --recbole-python /tmp/recbole-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from harness import REPO, ensure_fetched, machine, run_rerec, scratch_store

sys.path.insert(0, str(REPO))

from stages.core.store import ArtifactStore  # noqa: E402


def run_recbole(python: str, ml100k_dir: Path, tmp: Path, seed: int) -> dict:
    run = tmp / f"recbole-{seed}"
    data = run / "data"
    (data / "ml-100k").mkdir(parents=True)
    for ext in ("inter", "item", "user"):
        shutil.copy(ml100k_dir / f"ml-100k.{ext}", data / "ml-100k" / f"ml-100k.{ext}")
    out = run / "recbole.json"
    proc = subprocess.run(
        [python, str(REPO / "benchmarks" / "recbole_lightgcn.py"), str(data), str(out), str(seed)],
        cwd=run,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"RecBole run failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def synthetic_ml1m(folder: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    users, items, rows = 6040, 3706, 1_000_209
    item_p = 1.0 / np.arange(1, items + 1) ** 0.8
    user_p = 1.0 / np.arange(1, users + 1) ** 0.5
    u = rng.choice(users, size=int(rows * 2), p=user_p / user_p.sum())
    i = rng.choice(items, size=int(rows * 2), p=item_p / item_p.sum())
    pairs = pl.DataFrame({"user_id": u, "item_id": i}).unique().head(rows)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"items": folder / "items.csv", "inter": folder / "inter.csv"}
    pl.DataFrame(
        {"item_id": np.arange(items), "title": [f"Item {n}" for n in range(items)]}
    ).write_csv(paths["items"])
    pairs.write_csv(paths["inter"])
    return paths


def pas_sanity(art, graph) -> tuple[float, float, int]:
    """Mean cosine of the 1,000 most co-consumed item pairs vs 1,000 random pairs."""
    emb = np.stack(art.read("item_embeddings")["embedding"].to_numpy())
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    inter = graph.read("interactions").select("user_id", "item_id")
    co = (
        inter.join(inter, on="user_id")
        .filter(pl.col("item_id") < pl.col("item_id_right"))
        .group_by("item_id", "item_id_right")
        .len()
        .sort("len", descending=True)
        .head(1000)
    )
    a, b = co["item_id"].to_numpy(), co["item_id_right"].to_numpy()
    rng = np.random.default_rng(0)
    ra, rb = rng.integers(0, len(emb), 1000), rng.integers(0, len(emb), 1000)
    return (
        float((emb[a] * emb[b]).sum(1).mean()),
        float((emb[ra] * emb[rb]).sum(1).mean()),
        int(co["len"].min()),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recbole-python", help="python of a virtualenv with recbole==1.2.1")
    ap.add_argument("--workdir", type=Path, default=REPO / "workdir")
    ap.add_argument("--ml1m-epochs", type=int, default=5)
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=[2020, 1, 2],
        help="seeds of the ml-100k comparison (none: only the ML-1M timing)",
    )
    args = ap.parse_args()
    ensure_fetched(args.workdir)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="rerec-bench-cf-") as tmp_name:
        tmp = Path(tmp_name)
        work = scratch_store(args.workdir, tmp)
        run_rerec(["build-graph"], work)
        store = ArtifactStore(work)
        ours, theirs = [], []
        for seed in args.seeds:
            started = time.perf_counter()
            run_rerec(
                [
                    "pretrain-cf",
                    "--force",
                    "--quiet",
                    "--seed",
                    str(seed),
                    "--output",
                    f"cf-seed{seed}",
                ],
                work,
            )
            m = store.resolve(f"cf-seed{seed}").manifest.metrics
            ours.append(
                (
                    m["test"]["ndcg@10"],
                    m["test"]["recall@20"],
                    m["median_train_seconds_per_epoch"],
                    m["epochs"],
                )
            )
            print(
                f"seed {seed} ours (PyG LightGCN): test NDCG@10 {ours[-1][0]:.4f}  Recall@20 "
                f"{ours[-1][1]:.4f}  epochs {m['epochs']} (best {m['best_epoch']})  median "
                f"train s/epoch {ours[-1][2]:.3f}  wall {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            if args.recbole_python:
                rb = run_recbole(
                    args.recbole_python, work / "ml-100k" / "latest" / "ml-100k", tmp, seed
                )
                theirs.append(
                    (
                        rb["test"]["ndcg@10"],
                        rb["test"]["recall@20"],
                        statistics.median(rb["epoch_train_seconds"]),
                        len(rb["epoch_train_seconds"]),
                    )
                )
                print(
                    f"seed {seed} RecBole 1.2.1 LightGCN: test NDCG@10 {theirs[-1][0]:.4f}  "
                    f"Recall@20 {theirs[-1][1]:.4f}  epochs {theirs[-1][3]}  median train "
                    f"s/epoch {theirs[-1][2]:.3f}  wall {rb['wall_seconds']:.0f} s",
                    flush=True,
                )

        def summary(rows: list[tuple]) -> str:
            col = list(zip(*rows, strict=True))
            return (
                f"NDCG@10 {np.mean(col[0]):.4f} ± {np.std(col[0]):.4f}, Recall@20 "
                f"{np.mean(col[1]):.4f} ± {np.std(col[1]):.4f}, median s/epoch "
                f"{statistics.median(col[2]):.3f}"
            )

        if ours:
            print(f"ours over seeds {args.seeds}: {summary(ours)}")
        if theirs:
            print(f"RecBole over seeds {args.seeds}: {summary(theirs)}")
            ratio = statistics.median(r[2] for r in theirs) / statistics.median(r[2] for r in ours)
            print(f"speed: RecBole / ours seconds per epoch = {ratio:.2f}x (target >= 3x)")
        if ours:
            art, graph = store.resolve(f"cf-seed{args.seeds[0]}"), store.resolve("graph")
            co, rnd, min_users = pas_sanity(art, graph)
            print(
                f"PAS sanity: mean cosine of the 1,000 most co-consumed item pairs (each shared "
                f"by >= {min_users} users) {co:.3f} vs random pairs {rnd:.3f}"
            )

        paths = synthetic_ml1m(tmp / "ml1m")
        run_rerec(
            [
                "build-graph",
                "--source",
                "generic",
                "--output",
                "graph-ml1m",
                "--items",
                str(paths["items"]),
                "--interactions",
                str(paths["inter"]),
            ],
            work,
        )
        run_rerec(
            ["pretrain-cf", "--graph", "graph-ml1m", "--epochs", str(args.ml1m_epochs), "--quiet"],
            work,
        )
        big = store.resolve("cf-ml1m").manifest.metrics
        print(
            f"ML-1M-sized synthetic graph ({big['users']:,} users x {big['items']:,} items, "
            f"{big['train_interactions']:,} training interactions): median train s/epoch "
            f"{big['median_train_seconds_per_epoch']:.2f} over {big['epochs']} epochs"
        )


if __name__ == "__main__":
    main()
