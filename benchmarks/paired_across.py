"""Paired comparison of two evals that live in different places: two workdirs (two runs of the
experiment), or the experiment's committed per-query predictions
(`benchmarks/results/<name>-predictions.parquet`), on the queries both evaluated; refuses evals
of different query sets.

    python benchmarks/paired_across.py ~/rerec-runs/fidelity-smollm2-cpu eval-sft \\
        ~/rerec-runs/fidelity-smollm2-cpu-compact eval-sft
    P=benchmarks/results/fidelity-smollm2-cpu-predictions.parquet
    python benchmarks/paired_across.py $P eval-popular $P eval-random
    python benchmarks/paired_across.py $P eval-a+eval-b+eval-c $P eval-sft   # draws pooled

prints accuracy(run) - accuracy(against) with its 95% paired interval
(`stages.report.stage.paired_bootstrap`, as `rerec report --paired-against`), the queries only
one side got right each way, and the exact McNemar p-value of those counts. A side written
`A+B+...` pools several evals of the same queries (say, RL seeds of one recipe): each query
counts the share of them that got it right, so the difference is that of the draws' mean
accuracy, and the interval resamples queries (it shows how far 500 queries pin the mean of
these draws, not how a further draw would fall); the one-sided counts and McNemar's test
need right-or-wrong answers, so they are left out then.
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
    pooled_correct,
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


def load_pooled(source: Path, names: str) -> tuple[str, str, Any]:
    """``load`` of one eval, or of several joined by ``+``: their mean `correct` per query,
    over the queries every one of them evaluated (they must have read the same queries)."""
    loaded = [load(source, name) for name in names.split("+")]
    if len(loaded) == 1:
        return loaded[0]
    idents, queries = [ident for ident, _, _ in loaded], {q for _, q, _ in loaded}
    if len(set(idents)) < len(idents):
        raise UserError(f"{names}: an eval is named twice")
    if len(queries) > 1:
        there = ", ".join(sorted(queries))
        raise UserError(f"{names}: these evals read different queries ({there})")
    pooled = pooled_correct([rows for _, _, rows in loaded])
    return "mean of " + " + ".join(idents), queries.pop(), pooled


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a workdir, or a predictions .parquet file")
    p.add_argument("run")
    p.add_argument("against_source", type=Path)
    p.add_argument("against")
    a = p.parse_args()
    try:
        run, run_queries, run_rows = load_pooled(a.source, a.run)
        against, against_queries, against_rows = load_pooled(a.against_source, a.against)
        if run_queries != against_queries:
            raise UserError(f"{run} and {against} evaluated different queries")
        d = paired_bootstrap(run_rows, against_rows)
    except NoSharedQuery:
        print(f"error: {a.run} and {a.against} share no evaluated query", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    line = (
        f"{run} - {against}: {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] "
        f"(paired bootstrap, n={d['n']}, {run_queries})"
    )
    if "+" not in a.run + a.against:
        line += (
            f"; right only for the first: {d['only_run']}, only for the second: "
            f"{d['only_against']}; exact McNemar p = {d['mcnemar_p']:.3g}"
        )
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
