"""`rerec report`: evaluations side by side, as in the paper's table (rows = runs and baselines,
columns = domain-family accuracy), written as Markdown, JSON and PNG plots: accuracy by family
with 95% intervals, training reward and accuracy curves and curriculum difficulty per epoch of
the evaluated policies."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from stages.core.artifact import Artifact
from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.eval.metrics import mcnemar_exact_p

FAMILY_ORDER = ("simple", "medium", "hard", "interest", "all")
# Written into every report folder: `--out` replaces a folder only if it holds this marker (a
# previous report) or is empty, so a mistyped `--out .` never deletes a workdir or a project.
MARKER = ".rerec-report"


@dataclass
class Run:
    label: str
    eval: Artifact
    metrics: pl.DataFrame
    about: dict[str, Any]
    policy: Artifact | None


def column_label(domain: str, family: str) -> str:
    return f"{domain[:1].upper()}-{family.capitalize()}"


def load_runs(store: ArtifactStore, refs: list[str]) -> list[Run]:
    if not refs:
        raise UserError("name at least one eval artifact (e.g. rerec report eval-policy eval-base)")
    runs = []
    for ref in refs:
        art = store.resolve(ref, kind="eval")
        about = json.loads(art.file("eval.json").read_text())
        policy = None
        if about.get("policy"):
            try:
                policy = store.resolve(about["policy"])
            except UserError:
                policy = None  # removed since; its curves are left out
        label = art.name.removeprefix("eval-")
        runs.append(Run(label, art, art.read("metrics"), about, policy))
    return runs


def columns_of(runs: list[Run]) -> list[tuple[str, str]]:
    seen = {(d, f) for r in runs for d, f in r.metrics.select("domain", "family").iter_rows()}
    rank = {f: n for n, f in enumerate(FAMILY_ORDER)}
    return sorted(seen, key=lambda c: (c[0] != "movies", c[0], rank.get(c[1], 4)))


def table(runs: list[Run], metric: str = "accuracy") -> dict[str, Any]:
    cols = columns_of(runs)
    rows = []
    for run in runs:
        m = run.metrics.filter(pl.col("metric") == metric)
        found = {
            (r["domain"], r["family"]): r
            for r in m.select("domain", "family", "value", "ci_low", "ci_high", "n")
            .unique(["domain", "family"], keep="first", maintain_order=True)
            .iter_rows(named=True)
        }
        cells = {
            column_label(d, f): {k: found[d, f][k] for k in ("value", "ci_low", "ci_high", "n")}
            for d, f in cols
            if (d, f) in found
        }
        rows.append({"run": run.label, "eval": run.eval.ref, "cells": cells})
    return {"metric": metric, "columns": [column_label(d, f) for d, f in cols], "rows": rows}


def paired_difference(
    run: Artifact, against: Artifact, *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy of ``run`` minus that of ``against`` on the queries both evaluated, with a 95%
    paired percentile-bootstrap interval (`paired_bootstrap`)."""
    try:
        d = paired_bootstrap(
            run.read("predictions"), against.read("predictions"), resamples=resamples, seed=seed
        )
    except NoSharedQuery:
        raise UserError(f"{run.ref} and {against.ref} share no evaluated query") from None
    return {"run": run.ref, "against": against.ref} | d


class NoSharedQuery(ValueError):
    """Two sets of predictions with no `query_id` in common."""


def pooled_correct(draws: list[pl.DataFrame]) -> pl.DataFrame:
    """`query_id`, `correct`: the share of ``draws`` (predictions of several evals of the same
    queries, say RL seeds of one recipe) that got each query right, over the queries every
    one of them answered. `paired_bootstrap` of it against one eval gives the difference of
    the draws' mean accuracy, with an interval over queries: how far these queries pin that
    mean, not how a further draw would fall."""
    rows = pl.concat([d.select("query_id", pl.col("correct").cast(pl.Float64)) for d in draws])
    pooled = rows.group_by("query_id").agg(pl.col("correct").mean(), pl.len().alias("draws"))
    return pooled.filter(pl.col("draws") == len(draws)).drop("draws").sort("query_id")


def paired_bootstrap(
    run: pl.DataFrame, against: pl.DataFrame, *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Mean of ``run``'s `correct` minus ``against``'s over the `query_id`s both hold, with a
    95% paired percentile-bootstrap interval: each resample draws queries, and both runs are
    scored on the same draw, so the interval reflects the difference, not two separate
    spreads. Also the queries only one side got right, each way, and the exact McNemar
    p-value of those counts. NoSharedQuery when they share no query."""
    a = run.select("query_id", "correct")
    b = against.select("query_id", correct_b="correct")
    both = a.join(b, on="query_id").sort("query_id")
    if both.height == 0:
        raise NoSharedQuery("no shared query")
    diff = (both["correct"].cast(pl.Float64) - both["correct_b"].cast(pl.Float64)).to_numpy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    lo, hi = np.percentile(diff[idx].mean(axis=1), [2.5, 97.5])
    only_run, only_against = int((diff > 0).sum()), int((diff < 0).sum())
    return {
        "diff": float(diff.mean()),
        "ci": [float(lo), float(hi)],
        "n": int(diff.size),
        "only_run": only_run,
        "only_against": only_against,
        "mcnemar_p": mcnemar_exact_p(only_run, only_against),
    }


def draws_bootstrap(
    draws: list[pl.DataFrame], against: pl.DataFrame, *, resamples: int = 2000, seed: int = 0
) -> list[float]:
    """95% interval of the draws' mean accuracy minus ``against``'s when the draws are
    resampled as well as the queries: each resample draws as many draws as there are, with
    replacement, and queries as `paired_bootstrap` does (the same query draws for the same
    seed), so the interval counts the spread between draws (RL seeds) besides the choice of
    queries. With identical draws it is `paired_bootstrap`'s interval. With few draws it is
    still too narrow: resampling k draws keeps (k - 1) / k of their variance, and three draws
    have ten distinct resamples."""
    joined = against.select("query_id", pl.col("correct").cast(pl.Float64).alias("against"))
    for n, d in enumerate(draws):
        joined = joined.join(
            d.select("query_id", pl.col("correct").cast(pl.Float64).alias(f"d{n}")), on="query_id"
        )
    joined = joined.sort("query_id")
    if joined.height == 0:
        raise NoSharedQuery("no shared query")
    per_draw = joined.select(f"d{n}" for n in range(len(draws))).to_numpy().T  # draws × queries
    queries = np.random.default_rng(seed).integers(
        0, joined.height, size=(resamples, joined.height)
    )
    picks = np.random.default_rng([seed, 1]).integers(0, len(draws), size=(resamples, len(draws)))
    weights = (picks[:, :, None] == np.arange(len(draws))).mean(axis=1)  # resamples × draws
    diff = weights @ per_draw - joined["against"].to_numpy()  # resamples × queries
    lo, hi = np.percentile(np.take_along_axis(diff, queries, axis=1).mean(axis=1), [2.5, 97.5])
    return [float(lo), float(hi)]


def eval_identity(artifact: Artifact) -> str:
    """`name@version#<content hash, 12 digits>`: an eval as the experiment's results name it."""
    return f"{artifact.ref}#{artifact.manifest.content_hash[:12]}"


def queries_ref(artifact: Artifact) -> str:
    """`queries@<version>#<content hash, 12 digits>` of the queries an eval read: two evals
    are comparable query by query only when these are equal, whichever workdir or machine made
    them. The content is named as well as the version, since a version id is of the config and
    inputs, not of the code that wrote them."""
    found = [
        f"{i.name}@{i.version}#{i.content_hash[:12]}"
        for i in artifact.manifest.inputs
        if i.name == "queries"
    ]
    if not found:
        raise UserError(f"{artifact.ref} read no queries artifact")
    return found[0]


def markdown(tables: list[dict[str, Any]], runs: list[Run]) -> str:
    lines = ["# ReRec evaluation report", ""]
    lines.append("Runs: " + ", ".join(f"`{r.eval.ref}` ({r.about.get('evaluated')})" for r in runs))
    lines.append("")
    for t in tables:
        lines += [f"## {t['metric']}", ""]
        lines.append("| run | " + " | ".join(t["columns"]) + " |")
        lines.append("|---|" + "---|" * len(t["columns"]))
        for row in t["rows"]:
            cells = []
            for c in t["columns"]:
                cell = row["cells"].get(c)
                cells.append("—" if cell is None else f"{cell['value']:.3f}")
            lines.append(f"| {row['run']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "Values are means over the split's queries; 95% percentile-bootstrap intervals are in "
        "report.json. Accuracy is hit@1 among 1 positive and the other candidates."
    )
    return "\n".join(lines) + "\n"


def _trained_with_rl(run: Run) -> bool:
    """Whether the run's policy has RL curves (a `rerec sft` policy has a loss log only)."""
    return run.policy is not None and "curriculum" in run.policy.schema.tables


def _label(art: Artifact) -> str:
    return art.name.removeprefix("eval-")


def paired_markdown(differences: list[dict[str, Any]]) -> str:
    if not differences:
        return ""
    lines = ["", "## paired accuracy differences", ""]
    lines += [
        "| run | against | difference | 95% interval | queries | right only for run / against "
        "| McNemar p |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in differences:
        lo, hi = d["ci"]
        lines.append(
            f"| {d['label']} | {d['against_label']} | {d['diff']:+.3f} | "
            f"[{lo:+.3f}, {hi:+.3f}] | {d['n']} | {d['only_run']} / {d['only_against']} | "
            f"{d['mcnemar_p']:.3g} |"
        )
    lines.append("")
    lines.append(
        "Paired percentile bootstrap over the queries both runs evaluated (2,000 resamples): "
        "an interval above 0 means the run is more accurate. McNemar: the exact two-sided test "
        "on the queries only one of the two got right."
    )
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(t: dict[str, Any], path: Path) -> None:
    """Grouped bars with their 95% intervals, each labelled with its value; a zero is drawn as
    an outlined bar labelled 0.00 and a run without that column as "n/a", so the two cannot be
    confused; the x labels give each column's number of queries."""
    plt = _pyplot()
    cols, rows = t["columns"], t["rows"]
    fig, ax = plt.subplots(figsize=(min(16, max(6, 0.7 * len(cols) * max(1, len(rows)))), 4.5))
    width = 0.8 / max(len(rows), 1)
    top = 1.0
    for n, row in enumerate(rows):
        color = f"C{n % 10}"
        xs, ys, lows, highs = [], [], [], []
        for i, c in enumerate(cols):
            x = i + n * width - 0.4 + width / 2
            cell = row["cells"].get(c)
            if cell is None:
                ax.text(x, 0.01, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
                continue
            value, low, high = cell["value"], cell["ci_low"], cell["ci_high"]
            ok = low is not None and low == low
            xs.append(x)
            ys.append(value)
            lows.append(value - low if ok else 0.0)
            highs.append(high - value if ok else 0.0)
            label_at = high if ok else value
            top = max(top, label_at + 0.12)
            ax.text(x, label_at + 0.01, f"{value:.2f}", ha="center", va="bottom", fontsize=6)
        ax.bar(xs, ys, width, color=color, label=row["run"])
        ax.errorbar(xs, ys, yerr=[lows, highs], fmt="none", ecolor="black", capsize=2, lw=0.8)
        zeros = [x for x, y in zip(xs, ys, strict=True) if y == 0]
        ax.hlines([0.003] * len(zeros), [x - width / 2 for x in zeros],
                  [x + width / 2 for x in zeros], colors=color, linewidth=3)  # fmt: skip
    n_of = {}
    for row in rows:
        for c, cell in row["cells"].items():
            n_of.setdefault(c, cell.get("n"))
    ax.set_xticks(range(len(cols)), [f"{c}\n(n={n_of.get(c)})" for c in cols])
    ax.set_ylabel(t["metric"])
    ax.set_ylim(0, top)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # off the bars
    ax.set_title(
        f"{t['metric']} by domain and family (bars: mean; whiskers: 95% bootstrap interval)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(runs: list[Run], path: Path) -> bool:
    """Per step: the mean reward, the within-group reward spread (what GRPO learns from: zero
    means no gradient) and the training accuracy."""
    policies = {r.policy.ref: r.policy for r in runs if _trained_with_rl(r)}
    if not policies:
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    panels = (
        ("reward", "reward (mean over the step's completions)"),
        ("reward_std", "reward sd within a prompt's group"),
        ("accuracy", "hit@1 of the step's completions"),
    )
    for ref, pol in policies.items():
        log = pol.read("log")
        if log.height == 0:
            continue
        for ax, (column, _) in zip(axes, panels, strict=True):
            if column in log.columns:
                ax.plot(
                    log["step"], log[column], marker="." if log.height < 30 else None, label=ref
                )
    for ax, (column, title) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(column)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_curriculum(runs: list[Run], path: Path) -> bool:
    tables = {
        r.policy.ref: r.policy.read("curriculum")
        for r in runs
        if _trained_with_rl(r) and r.policy.read("curriculum").height
    }
    if not tables:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for ref, cur in tables.items():
        per = (
            cur.group_by("epoch")
            .agg(mean=pl.col("difficulty").mean(), kept=pl.col("kept").mean())
            .sort("epoch")
        )
        ax.plot(per["epoch"], per["mean"], marker="o", label=f"{ref}: mean difficulty")
        ax.plot(per["epoch"], per["kept"], marker="x", ls="--", label=f"{ref}: share kept")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_title("curriculum: difficulty (1 - NDCG) and queries kept")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def check_out_folder(out: Path) -> None:
    """``out`` may be replaced only if it is missing, empty, or a previous report."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out} is a file, not a folder; name a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UserError(
            f"--out {out} holds files that are not a rerec report; refusing to replace it "
            "(name a new or empty folder, or a previous report's)"
        )


def write_report(
    store: ArtifactStore,
    refs: list[str],
    out: Path,
    *,
    allow_mismatch: bool = False,
    paired: list[str] | None = None,
) -> tuple[list[dict], Path, list[str]]:
    """Write report.md, report.json and the plots into ``out`` (replaced as a whole if it is a
    previous report); also the warnings about runs over different inputs, when allowed."""
    out = out.absolute()
    check_out_folder(out)
    runs = load_runs(store, refs)
    against = [store.resolve(ref, kind="eval") for ref in paired or []]
    warnings = store.check_mismatch([*[r.eval for r in runs], *against], allow=allow_mismatch)
    tables = [table(runs, m) for m in ("accuracy", "ndcg", "valid_format")]
    differences = [
        paired_difference(r.eval, ref) | {"label": r.label, "against_label": _label(ref)}
        for ref in against
        for r in runs
        if r.eval.ref != ref.ref
    ]
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / MARKER).write_text("written by rerec report; `--out` may replace this folder\n")
        plot_accuracy(tables[0], tmp / "accuracy.png")
        plots = ["accuracy.png"]
        if plot_training(runs, tmp / "training.png"):
            plots.append("training.png")
        if plot_curriculum(runs, tmp / "curriculum.png"):
            plots.append("curriculum.png")
        text = markdown(tables, runs) + paired_markdown(differences)
        if warnings:
            text += "\n" + "\n".join(f"> warning: {w}" for w in warnings) + "\n"
        text += "\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
        (tmp / "report.md").write_text(text)
        (tmp / "report.json").write_text(
            json.dumps(
                {
                    "runs": [r.about | {"eval": r.eval.ref} for r in runs],
                    "tables": tables,
                    "paired": differences,
                    "warnings": warnings,
                },
                indent=2,
            )
            + "\n"
        )
        check_out_folder(out)  # nothing else appeared there meanwhile
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, trash)
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tables, out, warnings
