"""Paired comparison of two evals that live in different places: two workdirs (two runs of the
experiment), or the experiment's committed per-query predictions
(`benchmarks/results/<name>-predictions.parquet`), on the queries both evaluated; refuses evals
of different query sets.

    python benchmarks/paired_across.py ~/rerec-runs/fidelity-smollm2-cpu eval-sft \\
        ~/rerec-runs/fidelity-smollm2-cpu-compact eval-sft
    P=benchmarks/results/fidelity-smollm2-cpu-predictions.parquet
    python benchmarks/paired_across.py $P eval-popular $P eval-random

prints accuracy(run) - accuracy(against) with its 95% paired interval
(`stages.report.stage.paired_bootstrap`, as `rerec report --paired-against`), the queries only
one side got right each way, and the exact McNemar p-value of those counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.core.errors import UserError  # noqa: E402
from stages.core.store import ArtifactStore  # noqa: E402
from stages.report.stage import (  # noqa: E402
    NoSharedQuery,
    eval_identity,
    paired_bootstrap,
    queries_ref,
)


def load(source: Path, name: str) -> tuple[str, str, Any]:
    """(the eval's identity, its queries, its predictions) from a workdir or a predictions
    file."""
    import polars as pl

    source = source.expanduser()
    if source.is_dir():
        art = ArtifactStore(source).resolve(name, kind="eval")
        return eval_identity(art), queries_ref(art), art.read("predictions")
    if not source.is_file():
        raise UserError(f"{source}: neither a workdir nor a predictions file")
    try:
        table = pl.read_parquet(source).select(
            "eval_name", "eval", "queries", "query_id", "correct"
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserError(f"{source}: not a predictions file ({exc.__class__.__name__})") from None
    # a name, or `name@version` where the file holds more than one eval of that name (a rerun)
    pick = pl.col("eval").str.starts_with(name) if "@" in name else pl.col("eval_name") == name
    rows = table.filter(pick)
    evals = sorted(set(rows["eval"]))
    if not evals:
        there = ", ".join(sorted(set(table["eval_name"])))
        raise UserError(f"{source}: {name} is not in it (evals there: {there})")
    if len(evals) > 1:
        raise UserError(
            f"{source}: {name} is recorded as {len(evals)} evals ({', '.join(evals)}): name one "
            "as name@version"
        )
    return evals[0], rows["queries"][0], rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a workdir, or a predictions .parquet file")
    p.add_argument("run")
    p.add_argument("against_source", type=Path)
    p.add_argument("against")
    a = p.parse_args()
    try:
        run, run_queries, run_rows = load(a.source, a.run)
        against, against_queries, against_rows = load(a.against_source, a.against)
        if run_queries != against_queries:
            raise UserError(f"{run} and {against} evaluated different queries")
        d = paired_bootstrap(run_rows, against_rows)
    except NoSharedQuery:
        print(f"error: {a.run} and {a.against} share no evaluated query", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{run} - {against}: {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] "
        f"(paired bootstrap, n={d['n']}, {run_queries}); right only for the first: "
        f"{d['only_run']}, only for the second: {d['only_against']}; exact McNemar p = "
        f"{d['mcnemar_p']:.3g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
