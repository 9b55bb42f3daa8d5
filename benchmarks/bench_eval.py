"""Eval throughput: batched generation against one query at a time, in one process.

SmolLM2-135M from the workdir (`make demo` first), the same test queries, greedy, the eval's
default 256 new tokens. Prints seconds per query both ways and the ratio (target >= 5x), and
with --thousand also times `rerec eval` on 1,000 test queries end to end.

    python benchmarks/bench_eval.py                 # 32 queries, batch 16 vs 1
    python benchmarks/bench_eval.py --thousand      # + 1,000 queries through `rerec eval`
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import REPO, machine, run_rerec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "workdir")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--thousand", action="store_true")
    a = parser.parse_args()

    import polars as pl

    from stages.generation import generate, load_generator
    from stages.prompts import render_messages
    from stages.store import ArtifactStore

    store = ArtifactStore(a.workdir)
    df = (
        store.resolve("queries")
        .read("queries")
        .filter(pl.col("split") == "test")
        .sample(n=a.queries, seed=0)
    )
    conv = [render_messages(q) for q in df.to_dicts()]
    gen = load_generator(store, policy=None, model="smollm2-135m", device="cpu")
    timings = {}
    for bs in (a.batch_size, 1):
        started = time.perf_counter()
        texts, tokens = generate(gen, conv, batch_size=bs, max_new_tokens=a.max_new_tokens)
        timings[bs] = (time.perf_counter() - started, sum(tokens))
        print(
            f"batch {bs:>2}: {timings[bs][0]:.1f} s for {a.queries} queries "
            f"({timings[bs][0] / a.queries:.2f} s/query, {timings[bs][1] / timings[bs][0]:.1f} "
            "generated tokens/s)",
            flush=True,
        )
    print(machine())
    print(
        f"batched (x{a.batch_size}) vs one at a time: "
        f"{timings[1][0] / timings[a.batch_size][0]:.2f}x faster (target >= 5x)"
    )
    if a.thousand:
        seconds, peak = run_rerec(
            [
                "eval",
                "--model",
                "smollm2-135m",
                "--limit",
                "1000",
                "--output",
                "eval-bench",
                "--batch-size",
                str(a.batch_size),
                "--force",
                "--quiet",
            ],
            a.workdir,
        )
        print(
            f"rerec eval on 1,000 test queries (SmolLM2, CPU): {seconds / 60:.1f} min, "
            f"peak RSS {peak:.2f} GiB"
        )


if __name__ == "__main__":
    main()
