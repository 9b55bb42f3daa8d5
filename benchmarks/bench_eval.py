"""Eval throughput: batched generation against one query at a time, in one process; or, with
--compare, fp32 against bf16 and generation with and without the stop at the box.

SmolLM2-135M from the workdir (`make demo` first), the same test queries, greedy, the eval's
default 256 new tokens. Prints seconds per query both ways and the ratio (target >= 5x), and
with --thousand also times `rerec eval` on 1,000 test queries end to end.

--compare runs, in alternating rounds on the same queries: fp32 weights, fp32 weights under
bf16 autocast, and bf16 weights (what `--precision bf16` uses), each with the stop at the box,
and fp32 and bf16 weights without it. Prints each one's seconds per query (median over rounds),
mean completion tokens, share of boxed answers and share of answers equal to fp32's.

    python benchmarks/bench_eval.py                 # 32 queries, batch 16 vs 1
    python benchmarks/bench_eval.py --thousand      # + 1,000 queries through `rerec eval`
    python benchmarks/bench_eval.py --compare --queries 16 --workdir W [--policy NAME]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import REPO, machine, run_rerec  # noqa: E402


def compare(a: argparse.Namespace, store, conv: list) -> None:
    import copy

    import torch

    from stages.llm.answers import parse_boxed
    from stages.llm.generation import autocast, cpu_bf16_flags, generate, load_generator

    g32 = load_generator(
        store, policy=a.policy, model=None if a.policy else a.model, device="cpu", precision="fp32"
    )
    g16 = copy.copy(g32)
    g16.model = copy.deepcopy(g32.model).to(torch.bfloat16)
    runs = {  # name: (generator, autocast precision, stop at the box)
        "fp32, stop": (g32, "fp32", True),
        "bf16 autocast (fp32 weights), stop": (g32, "bf16", True),
        "bf16 weights, stop": (g16, "fp32", True),
        "fp32, no stop": (g32, "fp32", False),
        "bf16 weights, no stop": (g16, "fp32", False),
    }
    seconds: dict[str, list[float]] = {n: [] for n in runs}
    cpu: dict[str, list[float]] = {n: [] for n in runs}  # process CPU time: less noise on a
    # shared machine, where waiting for a core counts in the wall time only
    out: dict[str, tuple[list[str], list[int]]] = {}
    for r in range(a.rounds):
        for name, (gen, cast, stop) in runs.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            with autocast(cast, "cpu"):
                out[name] = generate(
                    gen,
                    conv,
                    batch_size=a.batch_size,
                    max_new_tokens=a.max_new_tokens,
                    stop_at_box=stop,
                )
            seconds[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            print(
                f"round {r + 1}: {name}: {seconds[name][-1]:.1f} s (CPU {cpu[name][-1]:.1f} s)",
                flush=True,
            )
    flags = ", ".join(cpu_bf16_flags()) or "no bf16 flags"
    print(f"{machine()} ({flags}); {g32.label}; {len(conv)} test queries, batch {a.batch_size}")
    print(
        "| generation | s/query | CPU s/query | mean tokens | boxed | answers = fp32's "
        "| texts = fp32's |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in runs:
        texts, tokens = out[name]
        ref = out["fp32, stop" if runs[name][2] else "fp32, no stop"][0]
        same = sum(parse_boxed(x) == parse_boxed(y) for x, y in zip(texts, ref, strict=True))
        boxed = sum(parse_boxed(x) is not None for x in texts)
        equal = sum(x == y for x, y in zip(texts, ref, strict=True))
        n = len(texts)
        print(
            f"| {name} | {statistics.median(seconds[name]) / n:.2f} | "
            f"{statistics.median(cpu[name]) / n:.2f} | {statistics.mean(tokens):.1f} | "
            f"{boxed}/{n} | {same}/{n} | {equal}/{n} |"
        )
    for clock, label in ((seconds, "wall"), (cpu, "CPU")):
        s32, s16 = (
            statistics.median(clock["fp32, stop"]),
            statistics.median(clock["bf16 weights, stop"]),
        )
        print(f"bf16 weights vs fp32 (with the stop), {label} time: {s32 / s16:.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("REREC_WORKDIR", REPO / "workdir"))
    )
    parser.add_argument("--compare", action="store_true", help="fp32 / bf16, stop / no stop")
    parser.add_argument("--rounds", type=int, default=1, help="--compare: rounds of each")
    parser.add_argument("--model", default="smollm2-135m", help="model artifact or folder")
    parser.add_argument("--policy", default=None, help="a policy instead of the model")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--queries-name", default="queries", help="queries artifact")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--thousand", action="store_true")
    a = parser.parse_args()

    import polars as pl

    from stages.core.store import ArtifactStore
    from stages.llm.generation import generate, load_generator
    from stages.llm.prompts import render_messages

    store = ArtifactStore(a.workdir.expanduser())
    df = (
        store.resolve(a.queries_name)
        .read("queries")
        .filter(pl.col("split") == "test")
        .sample(n=a.queries, seed=0)
    )
    conv = [render_messages(q) for q in df.to_dicts()]
    if a.compare:
        compare(a, store, conv)
        return
    gen = load_generator(store, policy=None, model="smollm2-135m", device="cpu", precision="fp32")
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
