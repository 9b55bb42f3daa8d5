"""`rerec sft` speed by micro-batch: the real command on the same examples, in the same
order, at each micro-batch (the optimizer step is always --batch-size examples; only how many
go through one forward pass changes), runs alternating (1, 2, 4, 1, 2, 4, ...) to spread
machine noise, each in a fresh process. Prints, per micro-batch, the median seconds per step
and tokens per second over every step but each run's first (warm-up), the peak resident memory,
and the ratio against micro-batch 4 (the default before micro-batch 1 became it on a CPU).

Why it matters on a CPU: a micro-batch of several examples pads them to the longest, and the
padded batch's attention takes a mask; one example alone has neither (transformers then asks
for plain causal attention).

    python benchmarks/bench_sft_step.py --workdir W                 # needs `make demo` in W
    python benchmarks/bench_sft_step.py --workdir W --candidate-facts index --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import REPO, machine, run_rerec, scratch_store  # noqa: E402

NEEDED = ("ml-100k", "wikidata-films", "graph", "queries", "smollm2-135m")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("REREC_WORKDIR", REPO / "workdir"))
    )
    p.add_argument("--micro-batches", default="1,2,4", help="comma-separated")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=6, help="steps a run (the first is left out)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each micro-batch")
    p.add_argument(
        "--candidate-facts", default="compact", choices=["compact", "index", "index-only"]
    )
    a = p.parse_args()
    workdir = a.workdir.expanduser()
    missing = [n for n in NEEDED if not (workdir / n / "latest").exists()]
    if missing:
        raise SystemExit(
            f"error: {workdir} lacks {', '.join(missing)}: run `make demo` there first"
        )
    sizes = [int(m) for m in a.micro_batches.split(",")]
    if any(a.batch_size % m for m in sizes):
        raise SystemExit(
            f"error: --batch-size {a.batch_size} must be a multiple of each micro-batch"
        )
    from stages.core.store import ArtifactStore

    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        store_dir = scratch_store(workdir, Path(tmp), NEEDED)
        store = ArtifactStore(store_dir)
        steps: dict[int, list[float]] = {m: [] for m in sizes}
        rates: dict[int, list[float]] = {m: [] for m in sizes}
        memory: dict[int, list[float]] = {m: [] for m in sizes}
        for r in range(a.rounds):
            for m in sizes:
                name = f"sft-mb{m}-r{r}"
                args = [
                    *("sft", "--steps", str(a.steps), "--batch-size", str(a.batch_size)),
                    *("--micro-batch", str(m), "--lr", "5e-4", "--max-length", "2304"),
                    *("--candidate-facts", a.candidate_facts, "--output", name, "--quiet"),
                ]
                _, peak = run_rerec(args, store_dir)
                log = store.resolve(name, kind="policy").read("log")
                log = log.filter(log["step"] > 1)
                steps[m] += log["seconds"].to_list()
                rates[m] += (log["tokens"] / log["seconds"]).to_list()
                memory[m].append(peak)
                median = statistics.median(log["seconds"].to_list())
                print(
                    f"round {r + 1}: micro-batch {m}: {median:.2f} s/step, peak {peak:.1f} GiB",
                    flush=True,
                )
    print(
        f"{machine()}; SmolLM2-135M LoRA, {a.candidate_facts} prompts, "
        f"{a.batch_size} examples a step"
    )
    base = 4 if 4 in sizes else sizes[-1]
    for m in sizes:
        print(
            f"micro-batch {m}: {statistics.median(steps[m]):.2f} s/step, "
            f"{statistics.median(rates[m]):.0f} tokens/s (median of {len(steps[m])} steps), "
            f"peak memory {max(memory[m]):.1f} GiB; "
            f"{statistics.median(steps[base]) / statistics.median(steps[m]):.2f}x the speed of "
            f"micro-batch {base}"
        )


if __name__ == "__main__":
    main()
