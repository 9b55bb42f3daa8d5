"""`rerec report`: evaluations side by side (Markdown, JSON, PNG plots, and the terminal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rerec_cli.app import app, state
from rerec_cli.output import JSON_HELP, err, out, print_json


@app.command("report")
def report_command(
    runs: Annotated[list[str], typer.Argument(help="eval artifacts (NAME\\[@VERSION]) to compare")],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="folder to write: new, empty, or a previous report (replaced) "
            "[default: WORKDIR/report]",
        ),
    ] = None,
    allow_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-mismatch",
            help="Compare runs whose inputs come from different versions (e.g. two query "
            "splits); the warning is written into the report.",
        ),
    ] = False,
    paired: Annotated[
        list[str] | None,
        typer.Option(
            "--paired-against",
            help="eval artifact to compare every run with: the accuracy difference and its "
            "95% paired bootstrap interval (repeatable)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Compare evaluations like the paper's table: rows = runs and baselines, columns =
    domain-family accuracy; also NDCG and valid-format tables, accuracy/training/curriculum
    plots."""
    from stages.report.stage import write_report  # matplotlib: only when reporting

    tables, folder, _ = write_report(
        state.store,
        runs,
        out_dir or state.store.root / "report",
        allow_mismatch=allow_mismatch,
        paired=paired,
    )
    if as_json:  # what report.json holds
        print_json(json.loads((folder / "report.json").read_text()))
    else:
        for t in tables:
            out.print(view(t))
        paired_rows = json.loads((folder / "report.json").read_text())["paired"]
        if paired_rows:
            out.print(paired_view(paired_rows))
    (err if as_json else out).print(f"written: {folder}/report.md, report.json and the plots")


def view(t: dict[str, Any]) -> Table:
    table = Table(title=f"{t['metric']} (mean; 95% interval in report.json)")
    table.add_column("run")
    for c in t["columns"]:
        table.add_column(c, justify="right")
    for row in t["rows"]:
        cells = [row["cells"].get(c) for c in t["columns"]]
        table.add_row(row["run"], *("—" if c is None else f"{c['value']:.3f}" for c in cells))
    return table


def paired_view(differences: list[dict[str, Any]]) -> Table:
    table = Table(title="paired accuracy differences (bootstrap 95% interval; McNemar exact)")
    for c in ("run", "against", "difference", "95% interval", "queries", "only run / against"):
        table.add_column(c, justify="left" if c in ("run", "against") else "right")
    table.add_column("McNemar p", justify="right")
    for d in differences:
        lo, hi = d["ci"]
        table.add_row(
            d["label"],
            d["against_label"],
            f"{d['diff']:+.3f}",
            f"[{lo:+.3f}, {hi:+.3f}]",
            str(d["n"]),
            f"{d['only_run']} / {d['only_against']}",
            f"{d['mcnemar_p']:.3g}",
        )
    return table
