"""The README's result tables, rendered from the files the commands wrote, so they cannot
drift from what was measured:

    python benchmarks/readme_tables.py            # rewrite the README's generated tables
    python benchmarks/readme_tables.py --check    # exit 1 if the README disagrees (tested)

- the demo table from `benchmarks/results/demo-report.json` (the `report.json` that `make demo`
  wrote in `workdir/report/`, copied there when the README's demo figures were measured);
- the experiment table from `benchmarks/results/fidelity-smollm2-cpu.json`
  (`python benchmarks/experiment.py --results` writes it), and its first run's (compact
  prompts) from `fidelity-smollm2-cpu-compact.json` (the same with
  `--config configs/experiment/smollm2-cpu-compact.yaml`).

A generated table sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->` lines.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
FAMILIES = ("M-Simple", "M-Medium", "M-Hard", "M-Interest")


def _cell(cell: dict[str, Any] | None) -> str:
    return "" if cell is None else f"{cell['value']:.3f}"


def demo_table(report: dict[str, Any]) -> str:
    """Runs as rows: valid format, then hit@1 per family and over all (from `rerec report`)."""
    by_metric = {t["metric"]: t for t in report["tables"]}
    acc, fmt = by_metric["accuracy"], by_metric.get("valid_format")
    cols = [c for c in acc["columns"] if c in FAMILIES or c == "M-All"]
    fmt_rows = {r["run"]: r["cells"] for r in fmt["rows"]} if fmt else {}
    baselines = {r["label"] for r in report["runs"] if r.get("source") == "baseline"}
    n = next((c["n"] for r in acc["rows"] for k, c in r["cells"].items() if k == "M-All"), None)
    lines = [
        f"| run | valid format | {' | '.join(cols)} |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for row in acc["rows"]:
        valid = "" if row["run"] in baselines else _cell(fmt_rows.get(row["run"], {}).get("M-All"))
        cells = " | ".join(_cell(row["cells"].get(c)) for c in cols)
        lines.append(f"| {row['run']} | {valid} | {cells} |")
    lines.append(
        f"\nhit@1 among 20 candidates on {n} test queries; valid format: the share of answers "
        "with a box (`workdir/report/report.json`, copied to "
        "`benchmarks/results/demo-report.json`)."
    )
    return "\n".join(lines)


def mcnemar_text(pair: dict[str, Any]) -> str:
    """'; right only for sft-rerec-48 / sft: 65 / 44, McNemar p 0.0549' where the pair has the
    counts (pairs computed before they were recorded have not)."""
    if "mcnemar_p" not in pair:
        return ""
    return (
        f"; right only for {pair['run']} / {pair['against']}: {pair['only_run']} / "
        f"{pair['only_against']}, McNemar p {pair['mcnemar_p']:.3g}"
    )


def draws_text(pooled: dict[str, Any]) -> str:
    """'; resampling the draws too: [-0.007, +0.077]' where the entry has that interval."""
    if "ci_draws_and_queries" not in pooled:
        return ""
    lo, hi = pooled["ci_draws_and_queries"]
    return f"; resampling the draws too: [{lo:+.3f}, {hi:+.3f}]"


def draw_names(pooled: dict[str, Any]) -> list[str]:
    """The pooled draws' names, `(rerun)` after those pooled with their rerun's answers."""
    reruns = set(pooled.get("reruns", []))
    return [f"{d} (rerun)" if d in reruns else d for d in pooled["draws"]]


def experiment_table(res: dict[str, Any]) -> str:
    """Runs and baselines with hit@1 per family, M-All with its 95% interval and the valid
    format share; then the paired differences against sft and sft→grpo, and the config's
    `draws` (one recipe's seeds) pooled against sft."""
    lines = [
        "| run | " + " | ".join(FAMILIES) + " | M-All [95% CI] | valid format |",
        "|---|" + "---|" * (len(FAMILIES) + 2),
    ]
    for name, r in res["runs"].items():
        cells = [f"{r['by_family'][f]:.3f}" if f in r["by_family"] else "" for f in FAMILIES]
        lo, hi = r["accuracy_ci"]
        fmt = "" if r.get("valid_format") is None else f"{r['valid_format']:.3f}"
        lines.append(
            f"| {name} | {' | '.join(cells)} | {r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] | {fmt} |"
        )
    for name, r in res["baselines"].items():
        lo, hi = r["accuracy_ci"]
        fams = " | ".join(
            f"{r['by_family'][f]:.3f}" if f in r.get("by_family", {}) else "" for f in FAMILIES
        )
        acc = f"{r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
        lines.append(f"| {name} (baseline) | {fams} | {acc} | |")
    paired = [
        f"- {d.get('run', run)} − {d.get('against', against)}: {d['diff']:+.3f} "
        f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] "
        f"(paired bootstrap, n={d['n']}{mcnemar_text(d)})"
        for key, against in (
            ("paired_vs_sft", "sft"),
            ("paired_vs_grpo", "sft-grpo"),
            ("paired_other", ""),
        )
        for run, d in res.get(key, {}).items()
    ]
    if paired:
        lines += ["", "Accuracy differences, 95% paired bootstrap intervals:", "", *paired]
    pooled = [
        f"- mean of {', '.join(draw_names(d))} − {d['against']}: {d['diff']:+.3f} "
        f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] (their mean accuracy {d['accuracy']:.3f}; "
        f"paired bootstrap over queries, n={d['n']}{draws_text(d)})"
        for d in res.get("draws_vs_sft", {}).values()
    ]
    if pooled:
        lines += ["", "RL draws of one recipe (seeds) pooled against the sft:", "", *pooled]
    return "\n".join(lines)


def rendered() -> dict[str, str]:
    tables = {}
    demo = RESULTS / "demo-report.json"
    if demo.is_file():
        tables["demo-table"] = demo_table(json.loads(demo.read_text()))
    for table, name in (
        ("experiment-table", "fidelity-smollm2-cpu"),
        ("experiment-compact-table", "fidelity-smollm2-cpu-compact"),
    ):
        experiment = RESULTS / f"{name}.json"
        if experiment.is_file():
            tables[table] = experiment_table(json.loads(experiment.read_text()))
    return tables


def fill(readme: str, tables: dict[str, str]) -> str:
    for name in re.findall(r"<!-- generated: ([\w-]+) -->", readme):
        if name not in tables:
            raise SystemExit(f"README.md's {name} block has no result file in {RESULTS}")
    for name, text in tables.items():
        pattern = re.compile(
            rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", flags=re.DOTALL
        )
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- generated: {name} --> block")
        readme = pattern.sub(lambda m, t=text: m.group(1) + t + "\n" + m.group(2), readme)
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    a = parser.parse_args()
    path = REPO / "README.md"
    old = path.read_text()
    new = fill(old, rendered())
    if a.check:
        if new != old:
            print("README.md's generated tables differ from benchmarks/results/", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
