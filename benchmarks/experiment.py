"""The paper's comparison at our scale, end to end: base, sft, sft→grpo, sft→rerec and the
rerec ablations on the same test queries, then one report with paired bootstrap intervals and
`benchmarks/results/<name>.json`, with every eval's answers per query beside it
(`<name>-predictions.parquet`).

    make experiment                                   # the default config, resumable
    python benchmarks/experiment.py --config configs/experiment/smollm2-cpu.yaml
    python benchmarks/experiment.py --only base sft-grpo sft-rerec   # the first four runs
    python benchmarks/experiment.py --only base       # the data, baselines and base model only
    python benchmarks/experiment.py --results         # print the table from what is done

Each step is a `rerec` command whose artifact is skipped when it exists, so a killed run
(Ctrl-C, a reboot) continues where it stopped; sft and RL runs also resume from their checkpoints,
an LLM's eval from the batches it finished.
The workdir is `REREC_WORKDIR` (default `~/rerec-runs/<name>`), outside the checkout. The
results files are merged, not rewritten: what the workdir lacks (a lost machine, a fresh one)
keeps its committed figures (`results`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stages.core.errors import UserError  # noqa: E402


def flags(options: dict[str, Any]) -> list[str]:
    """`{"steps": 40, "raae": False, "named_facts": True}` -> `--steps 40 --no-raae ...`."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            for v in value:
                out += [flag, str(v)]
        else:
            out += [flag, str(value)]
    return out


def rerec(workdir: Path, *args: str) -> None:
    """Run one step. An sft or RL run goes on from its last checkpoint when a killed experiment
    left one (`--resume`), an LLM's eval from the batches it saved (`eval --resume`), else
    starts (`--resume` refuses a run with nothing to resume, or one that cannot resume)."""
    command = [sys.executable, "-m", "rerec_cli", "--workdir", str(workdir), *args]
    print("+ rerec " + " ".join(args), flush=True)
    started = time.perf_counter()
    if args[0] in ("sft", "train") or (args[0] == "eval" and "--baseline" not in args):
        tried = subprocess.run([*command, "--resume"], stderr=subprocess.PIPE, text=True)
        sys.stderr.write(tried.stderr)
        if tried.returncode != 0:
            fresh = ("nothing to resume", "--resume cannot continue")
            if not any(reason in tried.stderr for reason in fresh):
                raise subprocess.CalledProcessError(tried.returncode, command)
            subprocess.run(command, check=True)
    else:
        subprocess.run(command, check=True)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def plan(cfg: dict[str, Any], only: list[str] | None) -> list[list[str]]:
    """Every command of the experiment, in order (cheap ones first). ``only`` names what to
    run beyond the data and the baselines: `base`, `sft`, RL runs (each brings the sft)."""
    known = {"base", "sft", *cfg["runs"]}
    if only and set(only) - known:
        raise ValueError(
            f"--only {' '.join(sorted(set(only) - known))}: not in the config "
            f"(choose from {', '.join(sorted(known))})"
        )
    with_sft = not only or "sft" in only or bool(set(only) & set(cfg["runs"]))
    with_base = not only or "base" in only
    prompt = flags(cfg.get("prompt", {}))
    evals = ["--limit", str(cfg["test_queries"]), *flags(cfg.get("eval", {}))]
    steps: list[list[str]] = [list(step) for step in cfg.get("prepare", [])]
    steps += [
        ["eval", "--baseline", b, "--limit", str(cfg["test_queries"]), "--quiet"]
        for b in cfg.get("baselines", [])
    ]
    base = ["eval", "--model", "smollm2-135m", *prompt, *evals, "--quiet"]
    for seed in cfg.get("seeds", [0]) if with_sft else []:
        sft_name = "sft" if seed == 0 else f"sft-s{seed}"
        steps.append(
            ["sft", *flags(cfg["sft"]), *prompt, "--seed", str(seed), "--output", sft_name, "-q"]
        )
        if "valid_queries" in cfg:  # the recipe is chosen on the valid split, never on test
            valid = ["--split", "valid", "--limit", str(cfg["valid_queries"])]
            valid += flags(cfg.get("eval", {}))
            steps.append(
                ["eval", "--policy", sft_name, *valid, "--output", f"eval-{sft_name}-valid", "-q"]
            )
        steps.append(["eval", "--policy", sft_name, *evals, "--output", f"eval-{sft_name}", "-q"])
        for n, (run, options) in enumerate(cfg["runs"].items()):
            if n == cfg.get("main_runs", 0) and with_base and base not in steps:
                steps.append(base)
            if only and run not in only:
                continue
            name = run if seed == 0 else f"{run}-s{seed}"
            options = dict(options or {})
            run_seed = options.pop("seed", seed)  # a second RL seed from the same sft
            steps.append(
                [
                    "train",
                    "--model",
                    sft_name,
                    *flags({**cfg["rl"], **options}),  # a run's options override
                    "--seed",
                    str(run_seed),
                    "--output",
                    f"policy-{name}",
                    "--quiet",
                ]  # fmt: skip
            )
            steps.append(
                ["eval", "--policy", f"policy-{name}", *evals, "--output", f"eval-{name}", "-q"]
            )
    if with_base and base not in steps:
        steps.append(base)
    return steps


# Per query, for every eval in the results: kept beside the JSON (`<name>-predictions.parquet`,
# `predictions_frame`), so that paired comparisons outlive the workdir (a lost machine, a fresh
# checkout).


def summary(eval_art: Any) -> dict[str, Any]:
    """An eval's figures for the results: accuracy with its interval, valid format, per family,
    answer counts, and which eval (and queries) they are of."""
    from stages.report.stage import eval_identity, queries_ref

    metrics = eval_art.read("metrics")
    rows = {(r["family"], r["metric"]): r for r in metrics.iter_rows(named=True)}
    acc = rows[("all", "accuracy")]
    fmt = rows.get(("all", "valid_format"))
    fams = [f for f in ("simple", "medium", "hard", "interest") if (f, "accuracy") in rows]
    label = {f: f"M-{f.capitalize()}" for f in fams}
    return {
        "accuracy": round(acc["value"], 4),
        "accuracy_ci": [round(acc["ci_low"], 4), round(acc["ci_high"], 4)],
        "valid_format": round(fmt["value"], 4) if fmt else None,
        "by_family": {label[f]: round(rows[(f, "accuracy")]["value"], 4) for f in fams},
        "by_family_ci": {
            label[f]: [round(rows[(f, "accuracy")][c], 4) for c in ("ci_low", "ci_high")]
            for f in fams
        },
        "by_family_n": {label[f]: rows[(f, "accuracy")]["n"] for f in fams},
        "n": acc["n"],
        "answers": answer_counts(eval_art.read("predictions")),
        # what the figures are of, as `name@version#content`: a version id is of the config and
        # inputs, so an eval rebuilt by other code keeps it; the content hash tells them apart
        "eval": eval_identity(eval_art),
        "queries": queries_ref(eval_art),
    }


def predictions_frame(rows: Any = None) -> Any:
    """``rows`` (or none) with the predictions file's columns and types: the eval (its name,
    and `name@version#content`), its queries, and per query the family, whether the answer was
    right, its format reward and the items it names."""
    import polars as pl

    schema = {
        "eval_name": pl.String,
        "eval": pl.String,
        "queries": pl.String,
        "query_id": pl.String,
        "family": pl.String,
        "correct": pl.Boolean,
        "format": pl.Float64,
        "predicted_item_ids": pl.List(pl.Int64),
    }
    if rows is None:
        return pl.DataFrame(schema=schema)
    return rows.select(list(schema)).cast(schema)


def predictions_of(eval_art: Any, entry: dict[str, Any]) -> Any:
    """An eval's per-query rows for the predictions file, tagged with its eval and queries."""
    import polars as pl

    rows = eval_art.read("predictions").with_columns(
        eval_name=pl.lit(eval_art.name),
        eval=pl.lit(entry["eval"]),
        queries=pl.lit(entry["queries"]),
    )
    return predictions_frame(rows)


# How an eval's entry in the results relates to the committed one: the same eval; an eval that
# gives the same figures (and answers, where the committed ones were kept); one with other
# figures that --replace names; a new entry; the committed one kept (the workdir lacks the
# eval, or holds one that differs and is recorded under `reruns`).
SAME, REPRODUCED, REPLACED, NEW, KEPT = "same", "reproduced", "replaced", "new", "kept"
IDENTITY = ("eval", "queries")
PAIRS = ("paired_vs_sft", "paired_vs_grpo", "paired_other")


def results(
    workdir: Path,
    cfg: dict[str, Any],
    prior: dict[str, Any] | None = None,
    prior_predictions: Any = None,
    replace: tuple[str, ...] = (),
) -> tuple[dict[str, Any], Any, list[str]]:
    """The issue's JSON, the per-query predictions, and notes on what came from where.

    Figures come from the eval artifacts in the workdir, merged with the committed results
    (``prior``, ``prior_predictions``) so that nothing recorded is lost with a workdir or a
    config edit. An eval the workdir lacks, and a run or baseline the config no longer names,
    keeps its committed entry. A workdir eval takes the place of the committed one when it is
    the same eval or reproduces its figures (and its answers, where those were kept); one that
    differs is recorded under `reruns` and the committed entry stays, since the committed pairs
    and the runs trained from it describe that one, unless ``replace`` names it. A paired
    comparison is computed from the predictions of both sides (refused, with a note, for
    different queries); where one side has none, the committed interval stays if neither side
    changed, else it is dropped with a note."""
    import polars as pl

    from stages.core.store import ArtifactStore

    store = ArtifactStore(workdir)
    prior = with_pair_labels(prior or {}, cfg)
    kept_rows = predictions_frame(prior_predictions)
    notes: list[str] = []
    frames: list[Any] = []
    status: dict[str, str] = {}
    reruns: dict[str, Any] = dict(prior.get("reruns", {}))

    def entry(key: str, name: str, before: dict[str, Any] | None) -> dict[str, Any] | None:
        old_rows = kept_rows.filter(pl.col("eval") == (before or {}).get("eval", ""))
        if not store.exists(name):
            if before is None:
                return None
            status[key] = KEPT
            frames.append(old_rows)
            if "eval" not in before:
                notes.append(f"{key}: kept ({name} of an earlier workdir; no predictions)")
            else:
                missing = "" if old_rows.height else "; its predictions are missing"
                notes.append(f"{key}: kept ({before['eval']}{missing})")
            return before
        art = store.resolve(name)
        fresh = summary(art)
        fresh_rows = predictions_of(art, fresh)
        old = (before or {}).get("eval", f"{name} of an earlier workdir")
        reruns.pop(key, None)  # a rerun recorded earlier: this eval decides now
        if before is None or before.get("eval") == fresh["eval"]:
            status[key] = NEW if before is None else SAME
        elif same_figures(before, fresh) and same_answers(old_rows, fresh_rows):
            status[key] = REPRODUCED
            answers = " and every answer" if old_rows.height else " (whose answers were not kept)"
            notes.append(f"{key}: {fresh['eval']} reproduces every figure of {old}{answers}")
        elif key in replace:
            status[key] = REPLACED
            notes.append(
                f"{key}: {old} (accuracy {before['accuracy']}) replaced by {fresh['eval']} "
                f"(accuracy {fresh['accuracy']}), as --replace says"
            )
        else:
            status[key] = KEPT
            reruns[key] = fresh
            frames.extend([old_rows, fresh_rows])  # the rerun's answers are kept too
            notes.append(
                f"{key}: {fresh['eval']} (accuracy {fresh['accuracy']}) does not reproduce "
                f"{old} (accuracy {before['accuracy']}): recorded under reruns, the committed "
                f"entry kept (--replace {key} takes the new one)"
            )
            return before
        frames.append(fresh_rows)
        return fresh

    def section(names: list[str], before: dict[str, Any]) -> dict[str, Any]:
        """Entries of ``names`` (their evals are `eval-<name>`), then the committed ones that
        the config no longer names."""
        out = {n: entry(n, f"eval-{n}", before.get(n)) for n in names}
        for n in sorted(before.keys() - set(names)):
            notes.append(f"{n}: not in the config; kept as committed")
            out[n] = entry(n, f"eval-{n}", before[n])
        return {n: v for n, v in out.items() if v is not None}

    runs = section(["base", "sft", *cfg["runs"]], prior.get("runs", {}))
    sft_valid = entry("sft_valid", "eval-sft-valid", prior.get("sft_valid") or None)
    baselines = section(list(cfg.get("baselines", [])), prior.get("baselines", {}))
    out: dict[str, Any] = {
        "test_queries": cfg["test_queries"],
        "steps": cfg["rl"]["steps"],
        "sft_steps": cfg["sft"]["steps"],
        "seeds": cfg.get("seeds", [0]),
        "runs": runs,
        # what chose the sft recipe: its valid-split figures (the test split is never looked at)
        "sft_valid": {k: v for k, v in (sft_valid or {}).items() if not k.startswith("by_")},
        "baselines": {
            b: {k: v for k, v in e.items() if k not in ("valid_format", "answers")}
            for b, e in baselines.items()
        },
    }
    if reruns:
        out["reruns"] = reruns
        frames += [kept_rows.filter(pl.col("eval") == r["eval"]) for r in reruns.values()]
    # a run's curves and groups go with its entry: while the committed one is kept (the
    # workdir's eval differs, or is not made yet), so are they
    taken = {run for run in ("sft", *cfg["runs"]) if status.get(run) != KEPT}
    out["curves"] = prior.get("curves", {}) | {
        run: c for run, c in curves(store, cfg).items() if run in taken
    }
    out["groups"] = prior.get("groups", {}) | {
        run: group_counts(store.resolve(f"policy-{run}").read("rollouts"))
        for run in cfg["runs"]
        if run in taken and store.exists(f"policy-{run}")
    }
    out["run_steps"] = prior.get("run_steps", {}) | {
        run: (options or {}).get("steps", cfg["rl"]["steps"])
        for run, options in cfg["runs"].items()
    }
    predictions = pl.concat([predictions_frame(), *frames]).unique().sort("eval", "query_id")
    for key, label, run, against, old, why in pairs_to_make(cfg, prior):
        made = pair(key, label, run, against, old, runs, predictions, status, notes)
        if made is not None:
            if why:
                notes.append(f"{key} {label}: {why}")
            out.setdefault(key, {})[label] = made
    committed = prior.get("draws_vs_sft", {})
    pooled = {
        recipe: pooled_draws(recipe, draws, out, predictions, notes)
        for recipe, draws in (cfg.get("draws") or {}).items()
    }
    for recipe in sorted(committed):
        if recipe not in pooled:
            notes.append(f"draws_vs_sft {recipe}: not in the config; kept as committed")
        elif pooled[recipe] is None:
            notes.append(f"draws_vs_sft {recipe}: kept as committed")
        pooled[recipe] = pooled[recipe] or committed[recipe]
    if any(pooled.values()):
        out["draws_vs_sft"] = {recipe: d for recipe, d in pooled.items() if d}
    return out, predictions, notes


def pooled_draws(
    recipe: str, draws: list[str], res: dict[str, Any], predictions: Any, notes: list[str]
) -> dict[str, Any] | None:
    """The config's `draws`: several RL runs of one recipe (its seeds) pooled against the sft.
    Each query counts the share of the draws that got it right (`pooled_correct`), so the
    difference is that of the draws' mean accuracy, with a paired interval over queries and
    one over draws and queries (`draws_bootstrap`: the spread between seeds counts). A
    draw's answers are its entry's, or its rerun's where the entry's were not kept (said in a
    note); None, with a note, when a draw or the sft has no answers or they read other
    queries."""
    import polars as pl

    from stages.report.stage import draws_bootstrap, paired_bootstrap, pooled_correct

    reruns = []

    def answers(run: str) -> tuple[str, Any] | None:
        for where in ("runs", "reruns"):
            ident = res.get(where, {}).get(run, {}).get("eval")
            rows = predictions.filter(pl.col("eval") == ident) if ident else None
            if rows is not None and rows.height:
                if where == "reruns":
                    reruns.append(run)
                    notes.append(
                        f"draws_vs_sft {recipe}: {run} is pooled with its rerun's answers "
                        f"({ident}); the committed entry's were not kept"
                    )
                return ident, rows
        return None

    found = {run: answers(run) for run in ("sft", *draws)}
    if missing := [run for run, got in found.items() if got is None]:
        notes.append(f"draws_vs_sft {recipe}: no answers kept for {', '.join(missing)}")
        return None
    if len({q for _, rows in found.values() for q in rows["queries"].unique()}) > 1:
        notes.append(f"draws_vs_sft {recipe}: its draws and the sft read different queries")
        return None
    rows = [found[run][1] for run in draws]
    mean = pooled_correct(rows)
    d = paired_bootstrap(mean, found["sft"][1])
    return {
        "draws": list(draws),
        "accuracy": round(float(mean["correct"].mean()), 4),
        "diff": round(d["diff"], 4),
        "ci": [round(x, 4) for x in d["ci"]],
        # the draws resampled too: the spread between seeds counts
        "ci_draws_and_queries": [round(x, 4) for x in draws_bootstrap(rows, found["sft"][1])],
        "n": d["n"],
        "against": "sft",
        "evals": [found[run][0] for run in draws],
        "against_eval": found["sft"][0],
    } | ({"reruns": reruns} if reruns else {})


def same_figures(before: dict[str, Any], fresh: dict[str, Any]) -> bool:
    """Every figure the committed entry records (a baseline's leaves out the answers) is the
    fresh one's, as JSON writes them (an interval of no resamples is NaN, which equals
    nothing)."""
    keys = before.keys() - set(IDENTITY)
    return json.dumps({k: before[k] for k in keys}, sort_keys=True) == json.dumps(
        {k: fresh.get(k) for k in keys}, sort_keys=True
    )


def same_answers(old_rows: Any, fresh_rows: Any) -> bool:
    """Whether each query was right for both or wrong for both (true when the committed
    answers were not kept: nothing to compare)."""
    if not old_rows.height:
        return True
    cols = ["query_id", "correct"]
    return old_rows.select(cols).sort("query_id").equals(fresh_rows.select(cols).sort("query_id"))


def pairs_to_make(
    cfg: dict[str, Any], prior: dict[str, Any]
) -> list[tuple[str, str, str, str, dict[str, Any] | None, str]]:
    """(key, label, run, reference, the committed pair or None, why it is here when the config
    does not ask for it) of every comparison: the config's, then the committed ones it no
    longer asks for (under `paired_other` when the config pairs their run with another
    reference now), so that each is computed anew, kept or dropped by the same rules."""
    todo = []
    wanted = {}
    for key, run, against in comparisons(cfg):
        label = pair_label(key, run, against)
        wanted[key, label] = against
        old = prior.get(key, {}).get(label)
        todo.append(
            (key, label, run, against, old if old and old["against"] == against else None, "")
        )
    for key in PAIRS:
        for label, old in sorted(prior.get(key, {}).items()):
            run, against = old["run"], old["against"]
            if wanted.get((key, label)) == against:
                continue
            if (key, label) in wanted:  # the config pairs this run with another one now
                moved = ("paired_other", pair_label("paired_other", run, against))
                todo.append(
                    (
                        *moved,
                        run,
                        against,
                        old,
                        f"the config now pairs {run} with {wanted[key, label]}; this is "
                        "another comparison",
                    )
                )
            else:
                todo.append((key, label, run, against, old, "not in the config"))
    return todo


def pair(
    key: str,
    label: str,
    run: str,
    against: str,
    old: dict[str, Any] | None,
    runs: dict[str, Any],
    predictions: Any,
    status: dict[str, str],
    notes: list[str],
) -> dict[str, Any] | None:
    """One paired comparison: computed from both sides' predictions, else ``old`` if neither
    side changed, else None (with a note when ``old`` is dropped)."""
    import polars as pl

    from stages.report.stage import NoSharedQuery, paired_bootstrap

    a, b = runs.get(run), runs.get(against)
    rows = [
        predictions.filter(pl.col("eval") == e["eval"]) if e and "eval" in e else None
        for e in (a, b)
    ]
    if rows[0] is not None and rows[1] is not None and rows[0].height and rows[1].height:
        if set(rows[0]["queries"]) != set(rows[1]["queries"]):
            notes.append(f"{key} {label}: {run} and {against} read different queries")
            return None
        try:
            d = paired_bootstrap(*rows)
        except NoSharedQuery:
            notes.append(f"{key} {label}: {run} and {against} share no query")
            return None
        if d["n"] < max(r.height for r in rows):
            notes.append(f"{key} {label}: paired on the {d['n']} queries both answered")
        return {
            "diff": round(d["diff"], 4),
            "ci": [round(x, 4) for x in d["ci"]],
            "n": d["n"],
            "only_run": d["only_run"],
            "only_against": d["only_against"],
            "mcnemar_p": float(f"{d['mcnemar_p']:.3g}"),  # never rounded to 0
            "run": run,
            "against": against,
            "evals": [a["eval"], b["eval"]],
        }
    if old is None:
        return None
    sides = {status.get(run), status.get(against)}
    if sides <= {SAME, KEPT, REPRODUCED}:
        if REPRODUCED in sides:
            notes.append(f"{key} {label}: kept; computed with the earlier evals, reproduced since")
        return old
    notes.append(
        f"{key} {label}: dropped; {run} or {against} changed and the other has no predictions "
        "to pair anew"
    )
    return None


def pair_label(key: str, run: str, against: str) -> str:
    """A comparison's name in the results: the run (each run has one sft and one GRPO
    reference), or `run vs reference` for the config's other pairs (a run may have several)."""
    return f"{run} vs {against}" if key == "paired_other" else run


def with_pair_labels(res: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """``res`` with every comparison naming its run and reference, and `paired_other` named by
    `pair_label`: results written before did not (the first run's pairs name neither; against
    sft or the run's GRPO reference, by their key)."""
    res = dict(res)
    grpo_of = cfg.get("grpo_of", {})
    for key in [k for k in PAIRS if k in res]:
        named = {}
        for label, d in res[key].items():
            run = d.get("run", label.split(" vs ")[0])
            default = {"paired_vs_sft": "sft", "paired_vs_grpo": grpo_of.get(run, "sft-grpo")}
            against = d.get("against") or default.get(key) or label.partition(" vs ")[2]
            if not against:
                raise UserError(f"{key} {label}: names no reference run ('against')")
            named[pair_label(key, run, against)] = {"run": run, "against": against} | d
        res[key] = named
    return res


def comparisons(cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(results key, run, reference) of every paired comparison: each RL run against the sft,
    against the GRPO run of its own steps (the config's `grpo_of`, else sft-grpo), and the
    config's other `paired` [run, reference] pairs."""
    grpo_of = cfg.get("grpo_of", {})
    pairs = [("paired_vs_sft", run, "sft") for run in cfg["runs"]]
    pairs += [
        ("paired_vs_grpo", run, grpo_of.get(run, "sft-grpo"))
        for run in cfg["runs"]
        if run not in grpo_of.values()  # a GRPO run is the reference of its own steps
    ]
    pairs += [("paired_other", run, against) for run, against in cfg.get("paired", [])]
    return [(key, run, against) for key, run, against in pairs if run != against]


def rl_steps_text(res: dict[str, Any]) -> str:
    """'16 steps' or, when runs differ, '16 steps (sft-rerec-48, sft-grpo-48: 48)'."""
    steps = res.get("run_steps") or {}
    others = {}
    for run, n in steps.items():
        if n != res["steps"]:
            others.setdefault(n, []).append(run)
    extra = "; ".join(f"{', '.join(runs)}: {n}" for n, runs in others.items())
    return f"{res['steps']} steps" + (f" ({extra})" if extra else "")


def per_family(frame: Any, counts: list[Any]) -> dict[str, dict[str, int]]:
    """The `counts` expressions per family (sorted) and over all rows ("all")."""
    out = {
        r.pop("family"): {k: int(v) for k, v in r.items()}
        for r in frame.group_by("family").agg(counts).sort("family").iter_rows(named=True)
    }
    out["all"] = {k: int(v) for k, v in frame.select(counts).row(0, named=True).items()}
    return out


def answer_counts(predictions: Any) -> dict[str, dict[str, int]]:
    """Per family and over all: answers, boxed ones (a `\\boxed{}`: the format term is
    positive, as eval's valid format counts it), boxed ones that name a candidate (resolved to
    an item), and right ones."""
    import polars as pl

    pred = predictions.with_columns(
        boxed=pl.col("format") > 0, candidate=pl.col("predicted_item_ids").list.len() > 0
    )
    counts = [
        pl.len().alias("n"),
        pl.col("boxed").sum(),
        (pl.col("boxed") & pl.col("candidate")).sum().alias("candidate"),
        pl.col("correct").sum(),
    ]
    return per_family(pred, counts)


def group_counts(rollouts: Any) -> dict[str, dict[str, int]]:
    """Per family and over all, the prompt groups of an RL run (one query at one step): how
    many, how many had rewards that differ (what GRPO learns from), how many mixed right and
    wrong answers, were all right, all wrong."""
    import polars as pl

    groups = rollouts.group_by("step", "query_id").agg(
        pl.col("family").first(),
        spread=pl.col("reward").max() - pl.col("reward").min(),
        right=pl.col("correct").sum(),
        size=pl.len(),
    )
    counts = [
        pl.len().alias("groups"),
        (pl.col("spread") > 1e-9).sum().alias("spread"),
        ((pl.col("right") > 0) & (pl.col("right") < pl.col("size"))).sum().alias("mixed"),
        (pl.col("right") == pl.col("size")).sum().alias("all_right"),
        (pl.col("right") == 0).sum().alias("all_wrong"),
    ]
    return per_family(groups, counts)


# per-step columns of a policy's training log kept in the results (RL runs), and of the sft log
RL_CURVE = ("reward", "reward_std", "accuracy", "valid_format", "penalised_token_share")
SFT_CURVE = ("loss", "token_accuracy")


def curves(store: Any, cfg: dict[str, Any]) -> dict[str, dict[str, list]]:
    """Training curves of the runs that exist: sft's loss, each RL run's reward, within-group
    reward spread, accuracy, valid format and RAAE's penalised token share, per step."""
    out: dict[str, dict[str, list]] = {}
    wanted = {"sft": ("sft", SFT_CURVE)} | {run: (f"policy-{run}", RL_CURVE) for run in cfg["runs"]}
    for run, (name, columns) in wanted.items():
        if not store.exists(name):
            continue
        log = store.resolve(name).read("log").sort("step")
        out[run] = {"step": log["step"].to_list()} | {
            c: [None if v is None else round(v, 4) for v in log[c].to_list()]
            for c in columns
            if c in log.columns
        }
    return out


def plot_curves(res: dict[str, Any], path: Path) -> None:
    """sft loss, and the RL runs' reward and accuracy per step (5-step running means, raw
    values faint), one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rl = {k: v for k, v in res.get("curves", {}).items() if k != "sft"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sft = res.get("curves", {}).get("sft")
    if sft:
        axes[0].plot(sft["step"], sft["loss"], color="black")
    axes[0].set(title="sft: loss on the completion tokens", xlabel="optimizer step", ylabel="loss")
    for ax, column, label in (
        (axes[1], "reward", "reward (mean over the step's completions)"),
        (axes[2], "accuracy", "training accuracy (hit@1 of the rollouts)"),
    ):
        for n, (run, c) in enumerate(rl.items()):
            y = np.array([np.nan if v is None else v for v in c.get(column, [])], dtype=float)
            if not len(y):
                continue
            color = f"C{n}"
            ax.plot(c["step"], y, color=color, alpha=0.25)
            k = min(5, len(y))
            smooth = np.convolve(np.nan_to_num(y), np.ones(k) / k, mode="valid")
            ax.plot(c["step"][k - 1 :], smooth, color=color, label=run)
        ax.set(title=label, xlabel="RL step", ylabel=column)
        if rl:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no RL run finished yet", ha="center", transform=ax.transAxes)
    fig.suptitle(
        f"{res['test_queries']} test queries; sft {res['sft_steps']} steps, RL "
        f"{rl_steps_text(res)} (faint: per step; solid: 5-step running mean)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_families(res: dict[str, Any], path: Path) -> None:
    """Hit@1 per family and over all (with its 95% interval) for every run and baseline, drawn
    by `rerec report`'s bar chart."""
    from stages.report.stage import plot_accuracy

    fams = ("M-Simple", "M-Medium", "M-Hard", "M-Interest")
    rows = []
    for name, r in [
        *res["runs"].items(),
        *((f"{b} (baseline)", v) for b, v in res["baselines"].items()),
    ]:
        ci, n = r.get("by_family_ci", {}), r.get("by_family_n", {})
        cells = {
            f: {"value": v, "ci_low": ci.get(f, [None])[0], "ci_high": ci.get(f, [None, None])[1],
                "n": n.get(f)}
            for f, v in r.get("by_family", {}).items()
        }  # fmt: skip
        lo, hi = r["accuracy_ci"]
        cells["M-All"] = {"value": r["accuracy"], "ci_low": lo, "ci_high": hi, "n": r.get("n")}
        rows.append({"run": name, "cells": cells})
    plot_accuracy({"metric": "accuracy", "columns": [*fams, "M-All"], "rows": rows}, path)


def print_table(res: dict[str, Any]) -> None:
    from benchmarks.readme_tables import experiment_table

    print(
        f"\n{res['test_queries']} test queries; RL {rl_steps_text(res)}; "
        f"sft {res['sft_steps']} steps"
    )
    print(experiment_table(res))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/experiment/smollm2-cpu.yaml")
    parser.add_argument("--only", nargs="*", help="base, sft and RL runs to do (default: all)")
    parser.add_argument("--results", action="store_true", help="only print and write results")
    parser.add_argument("--dry-run", action="store_true", help="print the commands")
    parser.add_argument(
        "--replace",
        nargs="*",
        default=[],
        help="runs or baselines whose committed entry an eval with other figures replaces "
        "(else it is recorded under reruns)",
    )
    a = parser.parse_args()
    try:
        run(a)
    except (UserError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def read_committed(out: Path, predictions_path: Path) -> tuple[Any, Any]:
    """The committed results and predictions (None where missing); a damaged one is refused."""
    import polars as pl

    prior = prior_predictions = None
    for path in (out, predictions_path):
        if not path.exists():
            continue
        try:
            if path == out:
                prior = json.loads(out.read_text())
            else:
                prior_predictions = predictions_frame(pl.read_parquet(path))
        except (json.JSONDecodeError, pl.exceptions.PolarsError, OSError) as exc:
            raise UserError(f"{path}: not readable as committed results ({exc})") from None
    return prior, prior_predictions


def check_draws(cfg: dict[str, Any]) -> None:
    """The config's `draws` maps a recipe's name to two runs or more of the config, each
    named once; ValueError (one line) otherwise."""
    draws = cfg.get("draws") or {}
    if not isinstance(draws, dict):
        raise ValueError(f"draws: {draws!r} is not a mapping of a recipe to its runs")
    for recipe, runs in draws.items():
        ok = isinstance(runs, list) and all(isinstance(r, str) for r in runs)
        if not ok or len(runs) < 2 or len(set(runs)) < len(runs) or set(runs) - set(cfg["runs"]):
            raise ValueError(
                f"draws {recipe}: {runs!r} must name two runs or more of the config, each once"
            )


def run(a: argparse.Namespace) -> None:
    cfg = yaml.safe_load(a.config.read_text())
    workdir = Path(
        os.environ.get("REREC_WORKDIR") or Path.home() / "rerec-runs" / cfg["name"]
    ).expanduser()
    steps = plan(cfg, a.only)  # names checked, with --results too
    known = {"base", "sft", "sft_valid", *cfg["runs"], *cfg.get("baselines", [])}
    if set(a.replace) - known:
        raise ValueError(f"--replace {' '.join(sorted(set(a.replace) - known))}: not in the config")
    check_draws(cfg)
    if not a.results:
        for step in steps:
            if a.dry_run:
                print("rerec " + " ".join(step))
            else:
                rerec(workdir, *step)
        if a.dry_run:
            return
        evals = [f"eval-{n}" for n in ("base", "sft", *cfg["runs"], *cfg["baselines"])]
        from stages.core.store import ArtifactStore

        done = [e for e in evals if ArtifactStore(workdir).exists(e)]
        references = ("sft", "sft-grpo", *cfg.get("grpo_of", {}).values())
        paired = [f"eval-{p}" for p in references if f"eval-{p}" in done]
        rerec(
            workdir, "report", *done, "--out", str(workdir / "report"),
            *[x for p in paired for x in ("--paired-against", p)],
        )  # fmt: skip
    out = REPO / "benchmarks" / "results" / f"{cfg['name']}.json"
    predictions_path = out.with_name(f"{cfg['name']}-predictions.parquet")
    prior, prior_predictions = read_committed(out, predictions_path)
    res, predictions, notes = results(workdir, cfg, prior, prior_predictions, tuple(a.replace))
    for note in notes:
        print(f"note: {note}")
    out.write_text(json.dumps(res, indent=2) + "\n")
    if predictions.height and (
        prior_predictions is None or not predictions.equals(prior_predictions)
    ):
        predictions.write_parquet(predictions_path)
    plot_curves(res, out.with_name(f"{cfg['name']}-curves.png"))
    plot_families(res, out.with_name(f"{cfg['name']}-families.png"))
    print_table(res)
    print(f"\nwritten: {out} and {predictions_path.name}, {cfg['name']}-curves.png beside it")


if __name__ == "__main__":
    main()
