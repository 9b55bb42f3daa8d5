"""`rerec artifacts`: list the store, show one artifact with its lineage, print its path."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.table import Table
from rich.tree import Tree

from rerec_cli.app import state
from rerec_cli.output import out

artifacts_app = typer.Typer(help="Inspect the artifact store.", no_args_is_help=True)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@artifacts_app.command("list")
def list_artifacts(
    all_versions: Annotated[
        bool, typer.Option("--all", "-a", help="Show every version, not only the latest.")
    ] = False,
) -> None:
    """List the artifacts in the store (latest versions, or all with --all)."""
    store = state.store
    table = Table(title=f"artifacts in {store.root}")
    for col in ("name", "version", "kind", "schema", "created", "rows", "size", "content sha256"):
        table.add_column(col, no_wrap=True)
    if all_versions:
        table.add_column("latest")
    for name in store.names():
        latest = store.latest_version(name)
        versions = store.versions(name)
        shown = versions if all_versions else [a for a in versions if a.version == latest]
        for art in shown:
            m = art.manifest
            row = [
                name,
                m.version,
                m.kind,
                f"v{m.schema_version}",
                m.created_at[:19].replace("T", " "),
                f"{sum(m.row_counts.values()):,}" if m.row_counts else "-",
                _size(m.total_bytes),
                m.content_hash[:16],
            ]
            if all_versions:
                row.append("*" if m.version == latest else "")
            table.add_row(*row)
    if not table.row_count:
        out.print(f"no artifacts in {store.root} yet; start with `rerec fetch all`")
        return
    out.print(table)


@artifacts_app.command("show")
def show_artifact(
    ref: Annotated[str, typer.Argument(help="NAME (latest) or NAME@VERSION.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw manifest.")] = False,
) -> None:
    """Show an artifact's manifest: config, inputs and their lineage, metrics, files."""
    store = state.store
    art = store.resolve(ref, check_schema=False)
    m = art.manifest
    if as_json:
        print(m.model_dump_json(indent=2))
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for key, value in (
        ("artifact", art.ref),
        ("path", str(art.path)),
        ("kind", m.kind),
        ("schema", f"v{m.schema_version} (this rerec reads v{art.schema.version})"),
        ("created", m.created_at),
        ("command", m.command),
        ("code", m.code_version),
        ("wall time", f"{m.wall_seconds:.2f} s"),
        ("size", f"{_size(m.total_bytes)} in {len(m.files)} files"),
        ("content sha256", m.content_hash),
    ):
        info.add_row(key, value)
    out.print(info)
    if m.row_counts:
        rows = Table(title="rows")
        rows.add_column("table")
        rows.add_column("rows", justify="right")
        for t, n in m.row_counts.items():
            rows.add_row(t, f"{n:,}")
        out.print(rows)
    out.print("[bold]config[/bold]")
    out.print(yaml.safe_dump(m.config, sort_keys=False).rstrip(), markup=False)
    if m.metrics:
        out.print("[bold]metrics[/bold]")
        out.print(yaml.safe_dump(m.metrics, sort_keys=False).rstrip(), markup=False)
    tree = Tree(f"[bold]lineage[/bold] {art.ref}")
    nodes = {-1: tree}
    for depth, inp, found in store.lineage(art):
        label = f"{inp.name}@{inp.version} sha256 {inp.content_hash[:16]}"
        if found is None:
            label += " [red](no longer in the store)[/red]"
        nodes[depth] = nodes[depth - 1].add(label)
    if not m.inputs:
        tree.add("(no inputs)")
    out.print(tree)


@artifacts_app.command("path")
def artifact_path(
    ref: Annotated[str, typer.Argument(help="NAME (latest) or NAME@VERSION.")],
) -> None:
    """Print an artifact's folder (for scripts: `$(rerec artifacts path smollm2-135m)/model`)."""
    print(state.store.resolve(ref).path)
