"""Benchmark `rerec make-queries` on the default ml-100k splits (target <= 30 s, 2 cores).

Runs the real command in a fresh process N times (--force) and prints the median wall time and
the counts per family and split.

    python benchmarks/bench_make_queries.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from harness import REPO, ensure_fetched, machine, run_rerec, scratch_store

sys.path.insert(0, str(REPO))

from stages.core.store import ArtifactStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=REPO / "workdir")
    args = ap.parse_args()
    ensure_fetched(args.workdir)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="rerec-bench-q-") as tmp:
        work = scratch_store(args.workdir, Path(tmp))
        run_rerec(["build-graph"], work)
        times = [run_rerec(["make-queries", "--force"], work)[0] for _ in range(args.runs)]
        m = ArtifactStore(work).resolve("queries").manifest.metrics
        print(
            f"make-queries on ml-100k (default sizes), end to end: median "
            f"{statistics.median(times):.1f} s (runs: {', '.join(f'{t:.1f}' for t in times)}); "
            f"target <= 30 s: {'met' if statistics.median(times) <= 30 else 'MISSED'}"
        )
        print(
            f"{m['total']:,} queries: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(m["counts"].items()))
        )
        print("checks: " + ("all passed" if not any(m["checks"].values()) else str(m["checks"])))


if __name__ == "__main__":
    main()
