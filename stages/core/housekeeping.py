"""Workdir care, as DVC users expect: which artifacts are stale, removing a version, and
garbage collection that keeps every `latest` and everything it was built from.

- stale: an artifact's `latest` version was built from a version of an input that is no
  longer that input's `latest` (the graph was rebuilt, the queries were not). Its recorded
  command, run again, builds it from the current inputs.
- remove: one version, or every version of a name. A version that another artifact's `latest`
  was built from, or the `latest` of a name that keeps other versions, is refused (say which).
- gc: removes every version that is neither a `latest` nor an ancestor of one.

A removed version is renamed out of sight in one step, then deleted, under the name's write
lock, so a reader never sees half a folder.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from stages.core.atomic import LATEST, tmp_name
from stages.core.errors import UserError
from stages.core.store import ArtifactStore


@dataclass(frozen=True)
class Stale:
    ref: str  # the artifact's latest version, NAME@VERSION
    inputs: list[str]  # "graph@old (latest: graph@new)", one per outdated input
    command: str  # what rebuilds it from the current inputs


def _readable(store: ArtifactStore, name: str, version: str):
    try:
        return store.resolve(f"{name}@{version}", check_schema=False, verify=False)
    except UserError:
        return None


def stale(store: ArtifactStore) -> list[Stale]:
    """Latest versions built from inputs that are no longer their names' latest, or from an
    input that is itself stale (it will be rebuilt), inputs before what reads them: rebuild in
    this order. Each command runs against this store (``-w``)."""
    found: list[Stale] = []
    stale_names: set[str] = set()
    for name in _in_build_order(store):
        version = store.latest_version(name)
        art = _readable(store, name, version) if version else None
        if art is None:
            continue
        outdated = []
        for ref in art.manifest.inputs:
            latest = store.latest_version(ref.name)
            if latest not in (None, ref.version):
                outdated.append(f"{ref.name}@{ref.version} (latest: {ref.name}@{latest})")
            elif ref.name in stale_names:
                outdated.append(f"{ref.name}@{ref.version} (to be rebuilt)")
        if outdated:
            stale_names.add(name)
            command = art.manifest.command.replace(" --force", "")
            if (
                command.startswith("rerec ")
                and " -w " not in command
                and "--workdir" not in command
            ):
                command = f"rerec -w {shlex.quote(str(store.root))} " + command.removeprefix(
                    "rerec "
                )
            found.append(Stale(art.ref, outdated, command))
    return found


def _in_build_order(store: ArtifactStore) -> list[str]:
    """Names with inputs after the names they read (by their latest manifests)."""
    names = store.names()
    deps: dict[str, set[str]] = {}
    for name in names:
        version = store.latest_version(name)
        art = _readable(store, name, version) if version else None
        deps[name] = {r.name for r in art.manifest.inputs} & set(names) if art else set()
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for d in sorted(deps[name]):
            visit(d)
        order.append(name)

    for name in names:
        visit(name)
    return order


def kept(store: ArtifactStore) -> set[tuple[str, str]]:
    """(name, version) of every `latest` and of everything it was built from, recursively."""
    keep: set[tuple[str, str]] = set()
    todo = [(n, v) for n in store.names() if (v := store.latest_version(n)) is not None]
    while todo:
        name, version = todo.pop()
        if (name, version) in keep:
            continue
        keep.add((name, version))
        art = _readable(store, name, version)
        if art is not None:
            todo += [(r.name, r.version) for r in art.manifest.inputs]
    return keep


def garbage(store: ArtifactStore) -> list[tuple[str, str, int]]:
    """(name, version, bytes) of every version gc would remove."""
    keep = kept(store)
    out = []
    for name in store.names():
        for version in store.version_ids(name):
            if (name, version) not in keep:
                out.append((name, version, _folder_bytes(store.root / name / version)))
    return out


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def dependants(store: ArtifactStore, name: str, version: str) -> list[str]:
    """The kept artifacts (a `latest` or an ancestor of one) built from ``name@version``."""
    out = []
    for other, other_version in sorted(kept(store)):
        art = _readable(store, other, other_version)
        if art is not None and any(
            r.name == name and r.version == version for r in art.manifest.inputs
        ):
            out.append(art.ref)
    return out


def remove(store: ArtifactStore, name: str, version: str | None = None) -> list[tuple[str, int]]:
    """Remove ``name@version``, or every version of ``name``; (version, bytes) removed.
    Refused while a kept artifact was built from one of them, or for the `latest` of a name
    that keeps other versions."""
    if not store.exists(name):
        raise UserError(f"no artifact '{name}' in {store.root}")
    versions = store.version_ids(name)
    if version is not None:
        if version not in versions:
            raise UserError(f"{name} has no version {version} (versions: {', '.join(versions)})")
        if version == store.latest_version(name) and len(versions) > 1:
            raise UserError(
                f"{name}@{version} is the latest version of {name}; remove all of {name}, or "
                "build another version first"
            )
        versions = [version]
    for v in versions:
        users = dependants(store, name, v)
        if len(versions) > 1:  # removing every version: their links to each other do not count
            users = [d for d in users if not d.startswith(f"{name}@")]
        if users:
            more = f" (and {len(users) - 1} more)" if len(users) > 1 else ""
            raise UserError(f"{name}@{v} is an input of {users[0]}{more}; remove that first")
    removed = []
    with store.lock(name):
        for v in versions:
            removed.append((v, _delete(store.root / name / v)))
        base = store.root / name
        if not store.version_ids(name):
            (base / LATEST).unlink(missing_ok=True)
            shutil.rmtree(base, ignore_errors=True)
        for v in versions:
            (store.root / ".verified" / name / f"{v}.json").unlink(missing_ok=True)
    return removed


def collect(store: ArtifactStore, *, dry_run: bool = False) -> list[tuple[str, str, int]]:
    """Remove every version that is neither a `latest` nor an ancestor of one."""
    found = garbage(store)
    if dry_run:
        return found
    removed = []
    for name, version, size in found:
        with store.lock(name):
            if version == store.latest_version(name):  # made latest again meanwhile
                continue
            _delete(store.root / name / version)
            (store.root / ".verified" / name / f"{version}.json").unlink(missing_ok=True)
            removed.append((name, version, size))
    return removed


def _delete(folder: Path) -> int:
    size = _folder_bytes(folder)
    trash = folder.with_name(tmp_name(f"rm-{folder.name}"))
    folder.rename(trash)  # gone for readers in one step
    shutil.rmtree(trash, ignore_errors=True)
    return size
