"""The artifact store: the only way stages read and write data.

Layout under the workdir::

    <name>/<version>/manifest.json   what, from what, how, by which code, how big, how long
    <name>/<version>/<table>.parquet one file per table named in the artifact's schema
    <name>/<version>/...             any other file the stage needs (DuckDB, weights)
    <name>/latest -> <version>       symlink, moved only after a successful write
    <name>/.tmp-<pid>-<version>-<r>  a write in progress (or one that was killed)

The version id is a hash of the artifact name, schema version, resolved config and the content
hashes of its inputs, so an identical rerun finds its own result and is skipped. A write builds
the artifact in a temporary folder and renames it into place in one step; the `latest` symlink is
replaced atomically afterwards. A stage that raises, or a process that is killed, therefore
leaves the store as it was (apart from a `.tmp-*` folder that readers ignore and the next write
of that artifact removes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
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

from schemas import ARTIFACTS, ArtifactSchema, SchemaError, schema_for
from stages.errors import UserError
from stages.version import code_version

MANIFEST = "manifest.json"
LATEST = "latest"
TMP_PREFIX = ".tmp-"
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
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and p.name != "__pycache__"
            and any(self._version_dirs(p.name))
        )

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

    def resolve(self, ref: str, *, check_schema: bool = True) -> Artifact:
        """``name`` (its latest version) or ``name@version`` (a version id or a unique prefix)."""
        name, _, version = ref.partition("@")
        if not name:
            raise UserError(f"'{ref}' is not an artifact reference; use NAME or NAME@VERSION")
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
        return self._load(path, check_schema=check_schema)

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

    # ----------------------------------------------------------------- writing
    def build(
        self,
        name: str,
        *,
        config: BaseModel | Mapping[str, Any],
        inputs: Sequence[Artifact] = (),
        build: Callable[[ArtifactWriter], None],
        force: bool = False,
        command: str | None = None,
    ) -> BuildResult:
        """Create artifact ``name`` by calling ``build(writer)`` in a temporary folder.

        Skips the call when an artifact with the same version id exists (unless ``force``).
        The artifact appears, and ``latest`` moves, only if ``build`` returns normally.
        """
        schema = schema_for(name)
        cfg = _config_dict(config)
        refs = [a.as_input() for a in inputs]
        vid = version_id(name, schema.version, cfg, refs)
        base = self.root / name
        final = base / vid
        if (final / MANIFEST).is_file() and not force:
            artifact = self._load(final, check_schema=True)
            self._point_latest(base, vid)
            return BuildResult(artifact, skipped=True)

        new_base = not base.exists()
        base.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp(base)
        tmp = base / _tmp_name(vid)
        tmp.mkdir()
        writer = ArtifactWriter(path=tmp, schema=schema)
        started = time.perf_counter()
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
                    [f for f in files if f.path not in schema.derived_files]
                ),
                files=files,
            )
            (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            self._swap_into_place(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if new_base:
                with contextlib.suppress(OSError):  # only if nothing else appeared in it
                    base.rmdir()
            raise
        self._point_latest(base, vid)
        return BuildResult(Artifact(path=final, manifest=manifest), skipped=False)

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
            if p.is_file() and p.name != MANIFEST:
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
        if final.exists():  # --force over an existing version: move it aside, then swap
            trash = final.with_name(_tmp_name(f"old-{final.name}"))
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)

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
        for p in base.glob(f"{TMP_PREFIX}*"):
            pid_text = p.name[len(TMP_PREFIX) :].split("-", 1)[0]
            pid = int(pid_text) if pid_text.isdigit() else None
            if pid is None or not _pid_alive(pid):
                if p.is_symlink() or p.is_file():
                    p.unlink(missing_ok=True)
                else:
                    shutil.rmtree(p, ignore_errors=True)


def _tmp_name(label: str) -> str:
    # The writer's pid comes first so a later write can tell a live write from a killed one.
    return f"{TMP_PREFIX}{os.getpid()}-{label}-{secrets.token_hex(3)}"


def _content_hash(files: Sequence[FileEntry]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{f.sha256}\n".encode())
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
