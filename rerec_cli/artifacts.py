"""`rerec artifacts`: list the store, show one artifact with its lineage, print its path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer
import yaml
from rich.table import Table
from rich.tree import Tree

from rerec_cli.app import state
from rerec_cli.output import JSON_HELP, out, print_json
from stages.core.artifact import Artifact
from stages.core.errors import UserError
from stages.core.manifest import MANIFEST
from stages.core.store import ArtifactStore

artifacts_app = typer.Typer(
    help="Inspect and tidy the artifact store: list, show, path, verify, rm, gc.",
    no_args_is_help=True,
)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@dataclass
class _Row:
    """One line of `artifacts list`: an artifact version, or what is wrong with it."""

    name: str
    version: str
    artifact: Artifact | None = None
    problem: str | None = None  # set: the version (or the name's `latest`) is broken
    latest: bool = False


def _rows(store: ArtifactStore, name: str, all_versions: bool) -> list[_Row]:
    """Every version of ``name`` (or only its latest), one row each; a version whose manifest
    cannot be read, and a `latest` that points nowhere, are rows marked broken."""
    latest = store.latest_version(name)
    rows = []
    for version in store.version_ids(name):
        row = _Row(name, version, latest=version == latest)
        try:
            row.artifact = store.resolve(f"{name}@{version}", check_schema=False)
        except UserError as exc:
            prefix = f"{store.root / name / version / MANIFEST}: "
            row.problem = str(exc).removeprefix(prefix)
        rows.append(row)
    rows.sort(
        key=lambda r: (r.artifact is None, r.artifact.manifest.created_at if r.artifact else "")
    )
    if latest is None:
        missing = _Row(name, "-", problem="no `latest` link: which version is current is unknown")
        return rows + [missing] if all_versions else [missing]
    if not any(r.latest for r in rows):
        missing = _Row(name, latest, problem=f"latest -> {latest}, which is missing", latest=True)
        rows.append(missing)
    return rows if all_versions else [r for r in rows if r.latest]


def _json_row(r: _Row) -> dict[str, object]:
    m = r.artifact.manifest if r.artifact else None
    return {
        "name": r.name,
        "version": r.version,
        "latest": r.latest,
        "kind": m.kind if m else None,
        "schema_version": m.schema_version if m else None,
        "created_at": m.created_at if m else None,
        "rows": m.row_counts if m else None,
        "bytes": m.total_bytes if m else None,
        "content_hash": m.content_hash if m else None,
        "path": str(r.artifact.path) if r.artifact else None,
        "problem": r.problem,
    }


@artifacts_app.command("list")
def list_artifacts(
    all_versions: Annotated[
        bool, typer.Option("--all", "-a", help="Show every version, not only the latest.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List the artifacts in the store (latest versions, or all with --all). A version that
    cannot be read is listed as broken, with the reason under the table."""
    store = state.store
    if as_json:
        print_json(
            [_json_row(r) for n in store.names(broken=True) for r in _rows(store, n, all_versions)]
        )
        return
    table = Table(title=f"artifacts in {store.root}")
    for col in ("name", "version", "kind", "schema", "created", "rows", "size", "content sha256"):
        table.add_column(col, no_wrap=True)
    if all_versions:
        table.add_column("latest")
    broken = []
    for name in store.names(broken=True):
        for r in _rows(store, name, all_versions):
            if r.artifact is None:
                broken.append(r)
                row = [name, r.version, "[red]broken[/red]", *["-"] * 5]
            else:
                m = r.artifact.manifest
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
                row.append("*" if r.latest else "")
            table.add_row(*row)
    if not table.row_count:
        out.print(f"no artifacts in {store.root} yet; start with `rerec fetch all`")
        return
    out.print(table)
    for r in broken:
        out.print(f"broken: {r.name}@{r.version}: {r.problem}", markup=False, highlight=False)


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
        (
            "schema",
            f"v{m.schema_version} (this rerec reads "
            + ", ".join(f"v{v}" for v in (art.schema.version, *art.schema.reads))
            + ")",
        ),
        ("created", m.created_at),
        ("command", m.command),
        ("code", m.code_version),
        ("wall time", f"{m.wall_seconds:.2f} s"),
        ("size", f"{_size(m.total_bytes)} in {len(m.files)} files"),
        ("content sha256", m.content_hash),
    ):
        info.add_row(key, value)
    out.print(info)
    for warning in m.warnings:
        out.print(f"warning: {warning}", markup=False, highlight=False)
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


@artifacts_app.command("verify")
def verify_artifacts(
    ref: Annotated[
        str | None,
        typer.Argument(help="NAME (every version), NAME@VERSION, or nothing: the whole store."),
    ] = None,
) -> None:
    """Hash every file of the artifacts against their manifests (stages check size and mtime
    on each read, and hash only what changed). Exit 2 if anything is damaged."""
    store = state.store
    if ref is None:
        names = store.names(broken=True)
    elif "@" in ref:
        names = []
    else:
        store.resolve(ref, check_schema=False, verify=False)  # a clear error if unknown
        names = [ref]
    targets = [f"{n}@{v}" for n in names for v in store.version_ids(n)]
    if ref is not None and "@" in ref:
        targets = [ref]
    table = Table(title=f"verified in {store.root}")
    for col in ("artifact", "files", "size", "status"):
        table.add_column(col, no_wrap=True)
    damaged = []
    for target in targets:
        try:
            art = store.resolve(target, check_schema=False, verify=False)
        except UserError as exc:
            damaged.append(f"{target}: {exc}")
            table.add_row(target, "-", "-", "[red]unreadable manifest[/red]")
            continue
        problems = store.problems(art, full=True)
        m = art.manifest
        status = "ok" if not problems else f"[red]damaged ({len(problems)})[/red]"
        table.add_row(art.ref, str(len(m.files)), _size(m.total_bytes), status)
        damaged += [f"{art.ref}: {p}; rebuild with `{art.rebuild_command}`" for p in problems]
    if not targets:
        out.print(f"no artifacts in {store.root} yet")
        return
    out.print(table)
    for line in damaged:
        out.print(f"damaged: {line}", markup=False, highlight=False, soft_wrap=True)
    if damaged:
        raise UserError(f"{len(damaged)} problem(s) in {store.root}; see above")


@artifacts_app.command("rm")
def remove_artifact(
    ref: Annotated[str, typer.Argument(help="NAME (every version) or NAME@VERSION.")],
) -> None:
    """Remove one version of an artifact, or all of them. Refused while another artifact's
    latest version (or an ancestor of one) was built from it, and for the latest version of a
    name that keeps others."""
    from stages.core.housekeeping import remove

    store = state.store
    name, _, version = ref.partition("@")
    if version:
        version = store.resolve(ref, check_schema=False, verify=False).version  # a prefix
    removed = remove(store, name, version or None)
    for v, size in removed:
        out.print(f"removed {name}@{v} ({_size(size)})")


@artifacts_app.command("gc")
def collect_garbage(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Only list what would be removed.")
    ] = False,
) -> None:
    """Remove every version that is neither the latest of its name nor something a latest
    version was built from (recursively)."""
    from stages.core.housekeeping import collect

    store = state.store
    found = collect(store, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for name, version, size in found:
        out.print(f"{verb} {name}@{version} ({_size(size)})")
    total = sum(size for *_, size in found)
    out.print(f"{verb} {len(found)} version(s), {_size(total)}" if found else "nothing to remove")
