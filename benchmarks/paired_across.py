"""Paired bootstrap of two eval artifacts that live in different workdirs (two runs of the
experiment), on the queries both evaluated; refuses evals of different query sets.

    python benchmarks/paired_across.py ~/rerec-runs/fidelity-smollm2-cpu eval-sft \\
        ~/rerec-runs/fidelity-smollm2-cpu-compact eval-sft

prints accuracy(run) - accuracy(against) with its 95% paired interval
(`stages.report.stage.paired_difference`, the same as `rerec report --paired-against`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.core.store import ArtifactStore  # noqa: E402
from stages.report.stage import paired_difference, queries_ref  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", type=Path)
    p.add_argument("run")
    p.add_argument("against_workdir", type=Path)
    p.add_argument("against")
    a = p.parse_args()
    run = ArtifactStore(a.workdir.expanduser()).resolve(a.run)
    against = ArtifactStore(a.against_workdir.expanduser()).resolve(a.against)
    if queries_ref(run) != queries_ref(against):
        print(f"error: {run.ref} and {against.ref} evaluated different queries", file=sys.stderr)
        return 2
    d = paired_difference(run, against)
    print(
        f"{run.ref} - {against.ref}: {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] "
        f"(paired bootstrap, n={d['n']}, {queries_ref(run)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
