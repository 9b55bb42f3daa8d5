"""The artifact store: the only way stages read and write data.

Layout under the workdir::

    <name>/<version>/manifest.json   what, from what, how, by which code, how big, how long
    <name>/<version>/<table>.parquet one file per table named in the artifact's schema
    <name>/<version>/...             any other file the stage needs (DuckDB, weights)
    <name>/latest -> <version>       symlink, moved only after a successful write
    <name>/.tmp-<pid>-<version>-<r>  a write in progress (or one that was killed)
    .locks/<name>.lock               held (flock) by the process writing <name>
    .runs/<name>-<version>/          what a long stage saved on its way to <version> (RL
                                     checkpoints, an eval's finished batches), for a resume
    .verified/<name>/<version>.json  size and mtime of each file when its hash last matched

The version id is a hash of the artifact name, schema version, resolved config and the content
hashes of its inputs, so an identical rerun finds its own result and is skipped. A write builds
the artifact in a temporary folder and renames it into place in one step; the `latest` symlink is
replaced atomically afterwards. A stage that raises, or a process that is killed, therefore
leaves the store as it was (apart from a `.tmp-*` folder that readers ignore and the next write
of that artifact removes).

What a stage reads is checked against its manifest when it is resolved: every file's size and
mtime against the last verified ones, and its sha256 against the manifest whenever they changed
(`verify`). A damaged artifact is refused with the file and the command that rebuilds it. One
process at a time writes an artifact name (`lock`); `--force` over an existing version swaps the
new folder in with one atomic exchange, so readers never find the version missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas import ARTIFACTS, SchemaError, check_name, schema_for
from stages.core.artifact import Artifact, ArtifactWriter, BuildResult
from stages.core.atomic import (
    LATEST,
    hold_lock,
    point_latest,
    remove_stale_tmp,
    swap_into_place,
    tmp_name,
)
from stages.core.errors import UserError
from stages.core.lineage import Lineage
from stages.core.manifest import (
    MANIFEST,
    Manifest,
    canonical_json,
    config_dict,
    content_hash,
    file_entries,
    sha256_file,
    version_id,
)
from stages.core.version import code_version

LOCKS = ".locks"
VERIFIED = ".verified"


class ArtifactStore(Lineage):
    """Versioned artifacts under one root folder."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().absolute()

    # ----------------------------------------------------------------- reading
    def names(self, kind: str | None = None, *, broken: bool = False) -> list[str]:
        """Artifact names with at least one version (of ``kind``); with ``broken``, also names
        whose only trace is a `latest` link (its version gone), for listings that show them."""
        if not self.root.is_dir():
            return []
        names = sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and p.name != "__pycache__"
            and (any(self._version_dirs(p.name)) or (broken and (p / LATEST).is_symlink()))
        )
        if kind is None:
            return names
        with_kind = []
        for name in names:
            with contextlib.suppress(UserError, SchemaError):
                if schema_for(name).kind == kind:
                    with_kind.append(name)
        return with_kind

    def exists(self, name: str) -> bool:
        """Whether the store holds a version of artifact ``name``."""
        try:
            check_name(name)
        except SchemaError as exc:
            raise UserError(str(exc)) from None
        return any(self._version_dirs(name))

    def version_ids(self, name: str) -> list[str]:
        """The version folders of ``name`` that hold a manifest, readable or not, by id."""
        return sorted(p.name for p in self._version_dirs(name))

    def _version_dirs(self, name: str) -> Iterator[Path]:
        base = self.root / name
        if not base.is_dir():
            return
        for p in base.iterdir():
            if (
                p.is_dir()
                and not p.is_symlink()
                and not p.name.startswith(".")
                and (p / MANIFEST).is_file()
            ):
                yield p

    def versions(self, name: str) -> list[Artifact]:
        arts = [self._load(p, check_schema=False) for p in self._version_dirs(name)]
        return sorted(arts, key=lambda a: a.manifest.created_at)

    def latest_version(self, name: str) -> str | None:
        link = self.root / name / LATEST
        if not link.is_symlink():
            return None
        return os.readlink(link)

    def resolve(
        self,
        ref: str,
        *,
        check_schema: bool = True,
        verify: bool | None = None,
        kind: str | None = None,
    ) -> Artifact:
        """``name`` (its latest version) or ``name@version`` (a version id or a unique prefix).

        A stage reading the artifact gets it verified against its manifest (``verify``, on by
        default when the schema is checked); ``kind`` refuses an artifact of another kind."""
        name, _, version = ref.partition("@")
        if not name:
            raise UserError(f"'{ref}' is not an artifact reference; use NAME or NAME@VERSION")
        try:
            check_name(name)
            if version:
                check_name(version)
        except SchemaError as exc:
            raise UserError(f"'{ref}': {exc}") from None
        if not version:
            version = self.latest_version(name) or ""
            if not version:
                hint = (
                    f"create it with `{ARTIFACTS[name].produced_by.removesuffix(' --force')}`"
                    if name in ARTIFACTS
                    else f"artifacts there: {', '.join(self.names()) or 'none'}"
                )
                raise UserError(f"no artifact '{name}' in {self.root}; {hint}")
        path = self.root / name / version
        if not (path / MANIFEST).is_file():
            matches = [p for p in self._version_dirs(name) if p.name.startswith(version)]
            if len(matches) != 1:
                known = ", ".join(sorted(p.name for p in self._version_dirs(name))) or "none"
                what = "is ambiguous" if matches else "does not exist"
                raise UserError(
                    f"artifact version {name}@{version} {what} in {self.root} (versions: {known})"
                )
            path = matches[0]
        artifact = self._load(path, check_schema=check_schema)
        if kind is not None and artifact.manifest.kind != kind:
            raise UserError(
                f"{artifact.ref} is a {artifact.manifest.kind} artifact, not a {kind} "
                f"(artifacts of that kind: {', '.join(self.names(kind=kind)) or 'none'})"
            )
        if check_schema if verify is None else verify:
            self.verify(artifact)
        return artifact

    def _load(self, path: Path, *, check_schema: bool) -> Artifact:
        try:
            manifest = Manifest.model_validate_json((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise UserError(f"{path / MANIFEST}: unreadable manifest ({first})") from None
        if check_schema:
            schema = schema_for(manifest.name)
            if not schema.can_read(manifest.schema_version):
                raise UserError(
                    f"{manifest.name}@{manifest.version} has schema version "
                    f"{manifest.schema_version} but this rerec reads version "
                    f"{', '.join(map(str, (schema.version, *schema.reads)))}; "
                    f"rebuild it with `{schema.produced_by}`"
                )
        return Artifact(path=path, manifest=manifest)

    # ----------------------------------------------------------------- integrity
    def problems(self, artifact: Artifact, *, full: bool = False) -> list[str]:
        """What differs between ``artifact``'s files and its manifest (empty: intact).

        A file whose size and mtime are those recorded when its hash last matched is taken as
        unchanged; any other is hashed. ``full`` hashes every file, derived ones included, and
        also reports files the manifest does not list. Derived files (the DuckDB copy of the
        graph, which a user may open read-write) are otherwise only required to exist: no stage
        reads them."""
        derived = set(artifact.schema.derived_files) if not full else set()
        cache_path = self.root / VERIFIED / artifact.name / f"{artifact.version}.json"
        cached: dict[str, list[int]] = {}
        if not full:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(cache_path.read_text())
                if data.get("content_hash") == artifact.manifest.content_hash:
                    cached = data.get("files", {})
        seen: dict[str, list[int]] = {}
        out = []
        for entry in artifact.manifest.files:
            path = artifact.path / entry.path
            if entry.link is not None:
                if not path.is_symlink() or os.readlink(path) != entry.link:
                    out.append(f"file {entry.path} no longer links to {entry.link}")
                elif not path.is_file():
                    out.append(f"file {entry.path} links to {entry.link}, which is missing")
                continue
            try:
                st = path.stat()
            except OSError:
                out.append(f"file {entry.path} is missing")
                continue
            if entry.path in derived:
                continue
            if st.st_size != entry.bytes:
                out.append(
                    f"file {entry.path} has {st.st_size:,} bytes where the manifest says "
                    f"{entry.bytes:,} (truncated or replaced)"
                )
                continue
            stamp = [st.st_size, st.st_mtime_ns]
            if cached.get(entry.path) != stamp and sha256_file(path) != entry.sha256:
                out.append(f"file {entry.path} was modified after it was written (sha256 differs)")
                continue
            seen[entry.path] = stamp
        if full:
            listed = {f.path for f in artifact.manifest.files} | {MANIFEST}
            extra = [
                p.relative_to(artifact.path).as_posix()
                for p in sorted(artifact.path.rglob("*"))
                if p.is_file() and p.relative_to(artifact.path).as_posix() not in listed
            ]
            out += [f"file {e} is not in the manifest" for e in extra]
        if not out and seen != cached:
            self._remember_verified(artifact, seen)
        return out

    def verify(self, artifact: Artifact, *, full: bool = False) -> None:
        """Raise a UserError naming the first damaged file and the command that rebuilds it."""
        found = self.problems(artifact, full=full)
        if found:
            more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
            raise UserError(
                f"{artifact.ref} is damaged: {found[0]}{more}; rebuild it with "
                f"`{artifact.rebuild_command}`"
            )

    def _remember_verified(self, artifact: Artifact, stamps: Mapping[str, list[int]]) -> None:
        path = self.root / VERIFIED / artifact.name / f"{artifact.version}.json"
        data = {"content_hash": artifact.manifest.content_hash, "files": dict(stamps)}
        with contextlib.suppress(OSError):  # a read-only workdir: verify again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(tmp_name(path.name))
            tmp.write_text(canonical_json(data))
            os.replace(tmp, path)

    # ----------------------------------------------------------------- writing
    def planned_version(
        self, name: str, *, config: BaseModel | Mapping[str, Any], inputs: Sequence[Artifact] = ()
    ) -> str:
        """The version id `build` with this config and these inputs writes."""
        refs = [a.as_input() for a in inputs]
        return version_id(name, schema_for(name).version, config_dict(config), refs)

    def run_folder(self, name: str, vid: str) -> Path:
        """``<workdir>/.runs/<name>-<vid>``: what a long stage saves on its way to version
        ``vid`` of ``name``, so that an interrupted run can resume."""
        check_name(name)
        return self.root / ".runs" / f"{name}-{vid}"

    def remove_run_folder(self, name: str, folder: Path) -> None:
        """Remove a run folder of ``name`` once its artifact is written, under the artifact's
        lock: never the folder of another process's run of the same version (`--force`)."""
        with self.lock(name):
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def last_checkpoint(folder: Path, marker: str) -> Path | None:
        """The newest complete ``checkpoint-N`` of a run folder: one that holds ``marker`` as
        readable JSON, which the stage writes (durably) after everything else. Not
        `transformers.trainer_utils.get_last_checkpoint`: that returns the highest-numbered
        folder even when a kill during saving left it incomplete; this one resumes from the
        one before."""
        found = [
            (int(p.name.rsplit("-", 1)[1]), p)
            for p in folder.glob("checkpoint-*")
            if p.name.rsplit("-", 1)[1].isdigit() and _readable_json(p / marker)
        ]
        return max(found)[1] if found else None

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the write lock of artifact ``name`` (see `hold_lock`)."""
        check_name(name)
        with hold_lock(self.root / LOCKS, name):
            yield

    def existing(self, name: str, vid: str) -> Artifact | None:
        """Version ``vid`` of ``name`` if it is there and intact (a damaged one is rebuilt)."""
        final = self.root / name / vid
        if not (final / MANIFEST).is_file():
            return None
        artifact = self._load(final, check_schema=True)
        return None if self.problems(artifact) else artifact

    def built(
        self, name: str, *, config: BaseModel | Mapping[str, Any], inputs: Sequence[Artifact] = ()
    ) -> BuildResult | None:
        """What `build` with this config and these inputs would skip to: the intact existing
        version (``latest`` moves to it, as `build` does), else None. A stage asks before it
        loads a model, so that a rerun returns at once."""
        cfg = config_dict(config)
        vid = version_id(name, schema_for(name).version, cfg, [a.as_input() for a in inputs])
        with self.lock(name):
            found = self.existing(name, vid)
            if found is None:
                return None
            point_latest(self.root / name, vid)
            return BuildResult(found, skipped=True)

    def build(
        self,
        name: str,
        *,
        config: BaseModel | Mapping[str, Any],
        inputs: Sequence[Artifact] = (),
        build: Callable[[ArtifactWriter], None],
        force: bool = False,
        command: str | None = None,
        warnings: Sequence[str] = (),
        started: float | None = None,
    ) -> BuildResult:
        """Create artifact ``name`` by calling ``build(writer)`` in a temporary folder.

        Skips the call when an intact artifact with the same version id exists (unless
        ``force``). The artifact appears, and ``latest`` moves, only if ``build`` returns
        normally. ``warnings`` (what the user chose to go on with) stay in the manifest.
        ``started`` (a `time.perf_counter` value) is when the work began, for a stage that
        does it before writing (a training run): the manifest's wall_seconds count from it."""
        schema = schema_for(name)
        cfg = config_dict(config)
        refs = [a.as_input() for a in inputs]
        vid = version_id(name, schema.version, cfg, refs)
        base = self.root / name
        final = base / vid
        with self.lock(name):
            found = None if force else self.existing(name, vid)
            if found is not None:
                point_latest(base, vid)
                return BuildResult(found, skipped=True)

            new_base = not base.exists()
            base.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(base)
            tmp = base / tmp_name(vid)
            tmp.mkdir()
            writer = ArtifactWriter(path=tmp, schema=schema)
            started = time.perf_counter() if started is None else started
            try:
                build(writer)
                self._check_complete(writer)
                files = file_entries(tmp)
                manifest = Manifest(
                    name=name,
                    version=vid,
                    kind=schema.kind,
                    schema_version=schema.version,
                    created_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                    command=command or _current_command(),
                    config=cfg,
                    inputs=refs,
                    code_version=code_version(),
                    row_counts=writer.row_counts,
                    metrics=writer.metrics,
                    wall_seconds=round(time.perf_counter() - started, 3),
                    content_hash=content_hash(
                        [f for f in files if f.path not in schema.derived_files],
                        writer.content_sha256,
                    ),
                    files=files,
                    warnings=list(warnings),
                )
                (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
                stamps = {
                    f.path: [(st := (tmp / f.path).stat()).st_size, st.st_mtime_ns] for f in files
                }
                swap_into_place(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if new_base:
                    with contextlib.suppress(OSError):  # only if nothing else appeared in it
                        base.rmdir()
                raise
            point_latest(base, vid)
            artifact = Artifact(path=final, manifest=manifest)
            self._remember_verified(artifact, stamps)  # renames keep mtimes
        return BuildResult(artifact, skipped=False)

    @staticmethod
    def _check_complete(writer: ArtifactWriter) -> None:
        schema = writer.schema
        missing = [f"{t}.parquet" for t in schema.tables if t not in writer.row_counts]
        missing += [f for f in schema.files if not (writer.path / f).exists()]
        if missing:
            raise RuntimeError(f"stage for '{schema.name}' did not write {', '.join(missing)}")


def _current_command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in {"rerec", "__main__.py"}:
        argv[0] = "rerec"
    return shlex.join(argv)


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def scratch_dir(store: ArtifactStore, label: str) -> Iterator[Path]:
    """A temporary folder inside the workdir (same filesystem, so big files are not copied
    across devices), removed afterwards whatever happens."""
    base = store.root / ".scratch"
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(base)
    path = base / tmp_name(label)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
