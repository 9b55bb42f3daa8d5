"""Benchmark `rerec build-graph`: wall time and peak memory of the real command.

1. ml-100k + Wikidata film facts, end to end (`rerec build-graph --force`), median of N runs.
   Target: <= 5 s on a 2-core machine.
2. A synthetic input shaped like MovieLens-25M (25M ratings, 60k movies, 162k users, Zipf item
   popularity; MovieLens CSV files generated here and cached), end to end with Wikidata
   enrichment. Target: <= 90 s and <= 8 GiB peak memory.

Each run is a fresh `rerec` process; peak memory is that process's max RSS (os.wait4).

    python benchmarks/bench_build_graph.py [--runs 5] [--rows 25000000] [--skip-synthetic]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from harness import REPO, ensure_fetched, machine, run_rerec, scratch_store


def synthetic_movielens(folder: Path, rows: int, items: int, users: int, seed: int = 0) -> Path:
    """ratings.csv + movies.csv shaped like MovieLens-25M (cached by size)."""
    folder = folder / f"ml-synthetic-{rows}-{items}-{users}"
    if (folder / "ratings.csv").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Zipf-like item popularity and user activity, as in MovieLens.
    item_p = 1.0 / np.arange(1, items + 1) ** 0.9
    user_p = 1.0 / np.arange(1, users + 1) ** 0.6
    ratings = pl.DataFrame(
        {
            "userId": rng.choice(users, size=rows, p=user_p / user_p.sum()).astype(np.int64) + 1,
            "movieId": rng.choice(items, size=rows, p=item_p / item_p.sum()).astype(np.int64) + 1,
            "rating": rng.integers(1, 11, size=rows) / 2.0,
            "timestamp": rng.integers(789_652_009, 1_574_327_703, size=rows),
        }
    )
    ratings.write_csv(folder / "ratings.csv.tmp")
    genres = np.array(
        [
            "Action",
            "Adventure",
            "Animation",
            "Children",
            "Comedy",
            "Crime",
            "Documentary",
            "Drama",
            "Fantasy",
            "Film-Noir",
            "Horror",
            "Musical",
            "Mystery",
            "Romance",
            "Sci-Fi",
            "Thriller",
            "War",
            "Western",
        ]
    )
    years = rng.integers(1902, 2020, size=items)
    pl.DataFrame(
        {
            "movieId": np.arange(1, items + 1),
            "title": [
                f"Synthetic Film {i} ({y})" for i, y in zip(range(1, items + 1), years, strict=True)
            ],
            "genres": [
                "|".join(rng.choice(genres, size=rng.integers(1, 4), replace=False))
                for _ in range(items)
            ],
        }
    ).write_csv(folder / "movies.csv")
    (folder / "ratings.csv.tmp").rename(folder / "ratings.csv")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=25_000_000)
    ap.add_argument("--items", type=int, default=60_000)
    ap.add_argument("--users", type=int, default=162_000)
    ap.add_argument("--synthetic-runs", type=int, default=3)
    ap.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "workdir",
        help="store holding the fetched ml-100k and wikidata-films",
    )
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rerec-bench")
    ap.add_argument("--skip-synthetic", action="store_true")
    args = ap.parse_args()

    ensure_fetched(args.workdir)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="rerec-bench-") as tmp:
        store = scratch_store(args.workdir, Path(tmp))
        times, peaks = [], []
        for _ in range(args.runs):
            seconds, peak = run_rerec(["build-graph", "--force"], store)
            times.append(seconds)
            peaks.append(peak)
        print(
            f"ml-100k + Wikidata, end to end: median {statistics.median(times):.2f} s "
            f"(runs: {', '.join(f'{t:.2f}' for t in times)}), peak RSS {max(peaks):.2f} GiB; "
            f"target <= 5 s: {'met' if statistics.median(times) <= 5 else 'MISSED'}"
        )

        if args.skip_synthetic:
            return
        t0 = time.perf_counter()
        folder = synthetic_movielens(args.cache, args.rows, args.items, args.users)
        print(
            f"synthetic MovieLens-25M-shaped input in {folder} "
            f"({(folder / 'ratings.csv').stat().st_size / 2**20:.0f} MiB ratings.csv; "
            f"ready in {time.perf_counter() - t0:.1f} s)"
        )
        times, peaks = [], []
        for _ in range(args.synthetic_runs):
            seconds, peak = run_rerec(
                [
                    "build-graph",
                    "--source",
                    "movielens",
                    "--input-dir",
                    str(folder),
                    "--output",
                    "graph-synthetic",
                    "--force",
                ],
                store,
            )
            times.append(seconds)
            peaks.append(peak)
        median = statistics.median(times)
        print(
            f"synthetic {args.rows:,} interactions, {args.items:,} items, end to end: "
            f"median {median:.1f} s (runs: {', '.join(f'{t:.1f}' for t in times)}), "
            f"peak RSS {max(peaks):.2f} GiB; target <= 90 s and <= 8 GiB: "
            f"{'met' if median <= 90 and max(peaks) <= 8 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
