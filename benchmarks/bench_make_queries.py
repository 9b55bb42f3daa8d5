"""Benchmark `rerec make-queries` on the default ml-100k splits (target <= 30 s, 2 cores).

Runs the real command in a fresh process N times (--force) and prints the median wall time and
the counts per family and split.

    python benchmarks/bench_make_queries.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RERUN = [sys.executable, "-m", "rerec_cli.main"]
sys.path.insert(0, str(REPO))

from stages.store import ArtifactStore  # noqa: E402


def rerec(args: list[str], workdir: Path) -> float:
    env = {**os.environ, "REREC_WORKDIR": str(workdir)}
    started = time.perf_counter()
    proc = subprocess.run([*RERUN, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"rerec {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=REPO / "workdir")
    args = ap.parse_args()
    if not (args.workdir / "ml-100k" / "latest").exists():
        subprocess.run(
            [*RERUN, "--workdir", str(args.workdir), "fetch", "ml-100k", "wikidata-films"],
            check=True,
            cwd=REPO,
        )
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="rerec-bench-q-") as tmp:
        work = Path(tmp) / "workdir"
        work.mkdir()
        for name in ("ml-100k", "wikidata-films"):
            shutil.copytree(args.workdir / name, work / name, symlinks=True)
        rerec(["build-graph"], work)
        times = [rerec(["make-queries", "--force"], work) for _ in range(args.runs)]
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
