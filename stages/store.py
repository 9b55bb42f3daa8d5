"""The artifact store: the only way stages read and write data.

Layout under the workdir::

    <name>/<version>/manifest.json   what, from what, how, by which code, how big, how long
    <name>/<version>/<table>.parquet one file per table named in the artifact's schema
    <name>/<version>/...             any other file the stage needs (DuckDB, weights)
    <name>/latest -> <version>       symlink, moved only after a successful write
    <name>/.tmp-<pid>-<version>-<r>  a write in progress (or one that was killed)
    .locks/<name>.lock               held (flock) by the process writing <name>
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
import ctypes
import datetime as dt
import errno
import fcntl
import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel

from schemas import ARTIFACTS, ArtifactSchema, SchemaError, check_name, schema_for
from stages.errors import UserError
from stages.version import code_version

MANIFEST = "manifest.json"
LATEST = "latest"
TMP_PREFIX = ".tmp-"
LOCKS = ".locks"
VERIFIED = ".verified"
_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _config_dict(config: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return json.loads(_canonical_json(dict(config)))


class InputRef(BaseModel):
    name: str
    version: str
    content_hash: str


class FileEntry(BaseModel):
    path: str
    bytes: int
    sha256: str
    # A relative symlink (a policy's link to its base model's weights in the same workdir): the
    # target is recorded and checked, not hashed again; sha256 is that of the target string.
    link: str | None = None


class Manifest(BaseModel):
    name: str
    version: str
    kind: str
    schema_version: int
    created_at: str
    command: str
    config: dict[str, Any]
    inputs: list[InputRef]
    code_version: str
    row_counts: dict[str, int]
    metrics: dict[str, Any]
    wall_seconds: float
    content_hash: str
    files: list[FileEntry]
    # Things the user chose to go on with (inputs from different ancestors, --allow-mismatch).
    warnings: list[str] = []

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


@dataclass(frozen=True)
class Artifact:
    """A finished artifact on disk."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def schema(self) -> ArtifactSchema:
        return schema_for(self.name)

    def as_input(self) -> InputRef:
        return InputRef(
            name=self.name, version=self.version, content_hash=self.manifest.content_hash
        )

    @property
    def rebuild_command(self) -> str:
        """The command that wrote this artifact, with ``--force``: what rebuilds it as it was."""
        fallback = self.schema.produced_by
        if self.name in fallback.split():  # already names this artifact (`rerec fetch NAME`)
            return fallback
        try:
            command = shlex.split(self.manifest.command)
        except ValueError:
            return fallback
        if command[:2] != fallback.split()[:2]:  # not written by that rerec command
            return fallback
        return shlex.join(command if "--force" in command else [*command, "--force"])

    def table_path(self, table: str) -> Path:
        try:
            self.schema.table(table)
        except SchemaError as exc:
            raise UserError(f"{self.path}: {exc}") from None
        path = self.path / f"{table}.parquet"
        if not path.is_file():
            raise UserError(
                f"{self.ref}: table file {path} is missing; rebuild with "
                f"`{self.schema.produced_by}`"
            )
        return path

    def scan(self, table: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.table_path(table))

    def read(self, table: str) -> pl.DataFrame:
        return pl.read_parquet(self.table_path(table))

    def file(self, relpath: str) -> Path:
        path = self.path / relpath
        if not path.exists():
            raise UserError(
                f"{self.ref}: file {path} is missing; rebuild with `{self.schema.produced_by}`"
            )
        return path


@dataclass
class ArtifactWriter:
    """Handed to a stage's build function: where to write, and what to record."""

    path: Path
    schema: ArtifactSchema
    row_counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # sha256 of a table written without its timing columns: what the content hash uses for it.
    content_sha256: dict[str, str] = field(default_factory=dict)

    def write_table(self, table: str, df: pl.DataFrame) -> Path:
        """Validate ``df`` against the schema's table and write it as Parquet."""
        try:
            df = self.schema.table(table).validate(df, where=f"artifact '{self.schema.name}'")
        except SchemaError as exc:
            # A stage producing the wrong columns is a bug in rerec, not a user error.
            raise RuntimeError(str(exc)) from None
        out = self.path / f"{table}.parquet"
        df.write_parquet(out, compression="zstd", statistics=True)
        self.row_counts[table] = df.height
        timing = self.schema.table(table).timing_columns
        if timing:
            buf = io.BytesIO()
            df.drop(timing).write_parquet(buf, compression="zstd", statistics=True)
            self.content_sha256[out.name] = hashlib.sha256(buf.getvalue()).hexdigest()
        return out

    def file(self, relpath: str) -> Path:
        """A path inside the artifact for a non-table file; parent folders are created."""
        out = (self.path / relpath).resolve()
        if not out.is_relative_to(self.path.resolve()):
            raise RuntimeError(f"artifact file {relpath!r} escapes the artifact folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        return out


@dataclass(frozen=True)
class BuildResult:
    artifact: Artifact
    skipped: bool  # an identical artifact already existed


def version_id(
    name: str, schema_version: int, config: Mapping[str, Any], inputs: Sequence[InputRef]
) -> str:
    key = {
        "name": name,
        "schema_version": schema_version,
        "config": config,
        "inputs": sorted((i.name, i.content_hash) for i in inputs),
    }
    return hashlib.sha256(_canonical_json(key).encode()).hexdigest()[:12]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArtifactStore:
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
            if manifest.schema_version != schema.version:
                raise UserError(
                    f"{manifest.name}@{manifest.version} has schema version "
                    f"{manifest.schema_version} but this rerec reads version {schema.version}; "
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
            tmp = path.with_name(_tmp_name(path.name))
            tmp.write_text(_canonical_json(data))
            os.replace(tmp, path)

    # ----------------------------------------------------------------- lineage
    def lineage(self, artifact: Artifact) -> list[tuple[int, InputRef, Artifact | None]]:
        """Depth-first list of (depth, input ref, the input artifact if still present)."""
        out: list[tuple[int, InputRef, Artifact | None]] = []

        def walk(art: Artifact, depth: int) -> None:
            for ref in art.manifest.inputs:
                path = self.root / ref.name / ref.version
                found = (
                    self._load(path, check_schema=False) if (path / MANIFEST).is_file() else None
                )
                out.append((depth, ref, found))
                if found is not None:
                    walk(found, depth + 1)

        walk(artifact, 0)
        return out

    def input_of(self, artifact: Artifact, kind: str) -> Artifact:
        """The input of ``artifact`` of that kind, as its manifest records it (the graph a
        `queries` artifact was built from), verified like any read."""
        for ref in artifact.manifest.inputs:
            with contextlib.suppress(SchemaError):
                if schema_for(ref.name).kind == kind:
                    return self.resolve(f"{ref.name}@{ref.version}", kind=kind)
        raise UserError(f"{artifact.ref} records no {kind} input")

    def ancestry(self, artifact: Artifact) -> dict[str, str]:
        """``name -> version`` of the artifact and every ancestor the store still knows."""
        found = {artifact.name: artifact.version}
        for _, ref, _ in self.lineage(artifact):
            found.setdefault(ref.name, ref.version)
        return found

    def mismatches(self, artifacts: Sequence[Artifact]) -> list[str]:
        """Where artifacts that meet descend from different versions of one artifact: one line
        each, naming both versions (``queries@a`` from ``graph@1`` but ``cf@b`` from
        ``graph@2``). Empty when they agree."""
        seen: dict[str, tuple[str, Artifact]] = {}
        out = []
        for art in artifacts:
            for name, version in self.ancestry(art).items():
                if name not in seen:
                    seen[name] = (version, art)
                    continue
                first_version, first = seen[name]
                if version != first_version:
                    out.append(
                        f"{first.ref} comes from {name}@{first_version} but {art.ref} "
                        f"from {name}@{version}"
                    )
        return out

    def check_mismatch(self, artifacts: Sequence[Artifact], *, allow: bool) -> list[str]:
        """Stop when ``artifacts`` come from different ancestors, unless ``allow``: then the
        mismatches are returned as warnings for the manifest (and printed)."""
        found = self.mismatches([a for a in artifacts if a is not None])
        if found and not allow:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise UserError(
                f"inputs from different versions: {found[0]}{more}; rebuild the older one or "
                "pass --allow-mismatch"
            )
        for line in found:
            print(f"warning: inputs from different versions: {line}", file=sys.stderr)
        return [f"inputs from different versions: {line}" for line in found]

    # ----------------------------------------------------------------- writing
    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the write lock of artifact ``name`` (re-entrant within a process). A second
        process that wants it is refused at once with the holder's pid, rather than waiting
        behind a training run or overwriting its result."""
        check_name(name)
        held = _HELD_LOCKS.get((self.root, name))
        if held is not None:
            _HELD_LOCKS[(self.root, name)] = (held[0], held[1] + 1)
            try:
                yield
            finally:
                fd, depth = _HELD_LOCKS[(self.root, name)]
                _HELD_LOCKS[(self.root, name)] = (fd, depth - 1)
            return
        folder = self.root / LOCKS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(
                f"{name} is being written by pid {holder}; wait for it to finish, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD_LOCKS[(self.root, name)] = (fd, 1)
        try:
            yield
        finally:
            _HELD_LOCKS.pop((self.root, name), None)
            os.close(fd)  # releases the lock

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
        cfg = _config_dict(config)
        vid = version_id(name, schema_for(name).version, cfg, [a.as_input() for a in inputs])
        with self.lock(name):
            found = self.existing(name, vid)
            if found is None:
                return None
            self._point_latest(self.root / name, vid)
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
        cfg = _config_dict(config)
        refs = [a.as_input() for a in inputs]
        vid = version_id(name, schema.version, cfg, refs)
        base = self.root / name
        final = base / vid
        with self.lock(name):
            found = None if force else self.existing(name, vid)
            if found is not None:
                self._point_latest(base, vid)
                return BuildResult(found, skipped=True)

            new_base = not base.exists()
            base.mkdir(parents=True, exist_ok=True)
            self._remove_stale_tmp(base)
            tmp = base / _tmp_name(vid)
            tmp.mkdir()
            writer = ArtifactWriter(path=tmp, schema=schema)
            started = time.perf_counter() if started is None else started
            try:
                build(writer)
                self._check_complete(writer)
                files = self._file_entries(tmp)
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
                    content_hash=_content_hash(
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
                self._swap_into_place(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if new_base:
                    with contextlib.suppress(OSError):  # only if nothing else appeared in it
                        base.rmdir()
                raise
            self._point_latest(base, vid)
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

    @staticmethod
    def _file_entries(folder: Path) -> list[FileEntry]:
        entries = []
        for p in sorted(folder.rglob("*")):
            if p.is_symlink() and p.is_file():
                target = os.readlink(p)
                entries.append(
                    FileEntry(
                        path=p.relative_to(folder).as_posix(),
                        bytes=0,
                        sha256=hashlib.sha256(f"link:{target}".encode()).hexdigest(),
                        link=target,
                    )
                )
            elif p.is_file() and p.name != MANIFEST:
                entries.append(
                    FileEntry(
                        path=p.relative_to(folder).as_posix(),
                        bytes=p.stat().st_size,
                        sha256=sha256_file(p),
                    )
                )
        return entries

    @staticmethod
    def _swap_into_place(tmp: Path, final: Path) -> None:
        if not final.exists():
            os.rename(tmp, final)
        elif _exchange(tmp, final):  # --force: one atomic swap, the old version lands in tmp
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # no renameat2 here: a brief moment without the version
            trash = final.with_name(_tmp_name(f"old-{final.name}"))
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _point_latest(base: Path, vid: str) -> None:
        link = base / LATEST
        if link.is_symlink() and os.readlink(link) == vid:
            return
        tmp_link = base / _tmp_name("latest")
        os.symlink(vid, tmp_link)
        os.replace(tmp_link, link)  # atomic on POSIX

    @staticmethod
    def _remove_stale_tmp(base: Path) -> None:
        """Remove what killed writes left: only names this module makes (``.tmp-<pid>-...``)
        of processes that are gone."""
        for p in base.glob(f"{TMP_PREFIX}*"):
            pid_text = p.name[len(TMP_PREFIX) :].split("-", 1)[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            if p.is_symlink() or p.is_file():
                p.unlink(missing_ok=True)
            else:
                shutil.rmtree(p, ignore_errors=True)


# Locks this process holds: (store root, name) -> (file descriptor, depth).
_HELD_LOCKS: dict[tuple[Path, str], tuple[int, int]] = {}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _tmp_name(label: str) -> str:
    # The writer's pid comes first so a later write can tell a live write from a killed one.
    return f"{TMP_PREFIX}{os.getpid()}-{label}-{secrets.token_hex(3)}"


def _content_hash(files: Sequence[FileEntry], replace: Mapping[str, str] | None = None) -> str:
    """Over the files' paths and sha256s; ``replace`` gives the hash to use instead for some
    (tables without their timing columns)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{(replace or {}).get(f.path, f.sha256)}\n".encode())
    return h.hexdigest()


def _current_command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in {"rerec", "__main__.py"}:
        argv[0] = "rerec"
    return shlex.join(argv)


@contextlib.contextmanager
def scratch_dir(store: ArtifactStore, label: str) -> Iterator[Path]:
    """A temporary folder inside the workdir (same filesystem, so big files are not copied
    across devices), removed afterwards whatever happens."""
    base = store.root / ".scratch"
    base.mkdir(parents=True, exist_ok=True)
    ArtifactStore._remove_stale_tmp(base)
    path = base / _tmp_name(label)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
