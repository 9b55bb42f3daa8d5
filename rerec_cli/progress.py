"""What training commands show while they run and when they end: a progress bar on stderr with
the latest step's figures, and a curve table of evenly spaced steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stages.core.console import console
from stages.llm.prompts import describe_token_stats


def print_prompt_tokens(stats: pl.DataFrame) -> None:
    """A rendered split's prompt lengths per family (median / max), on stderr."""
    console.print(describe_token_stats(stats), markup=False)


def evenly_spaced(log: pl.DataFrame, rows: int) -> pl.DataFrame:
    """At most ``rows`` rows of ``log``, evenly spaced, the first and the last always kept."""
    if log.height <= rows:
        return log
    return log[sorted({round(i * (log.height - 1) / (rows - 1)) for i in range(rows)})]


class StepProgress:
    """``with StepProgress("sft", stats, quiet) as on_step``: a bar advanced by ``on_step(row,
    total)`` (the callback stages take), showing ``stats(row)``; None when quiet."""

    def __init__(self, label: str, stats: Callable[[dict[str, Any]], str], quiet: bool):
        self.label, self.stats, self.quiet = label, stats, quiet
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> Callable[[dict[str, Any], int], None] | None:
        if self.quiet:
            return None
        self.bar = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.bar.__enter__()
        return self.update

    def update(self, row: dict[str, Any], total: int) -> None:
        assert self.bar is not None
        if self.task is None:
            self.task = self.bar.add_task(self.label, total=total, stats="")
        self.bar.update(self.task, completed=row["step"], stats=self.stats(row))

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
