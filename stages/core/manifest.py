"""Manifests and content hashes: what an artifact is, from what, and how its version id and
content hash are computed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_dict(config: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return json.loads(canonical_json(dict(config)))


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


# Config keys that never change what a stage writes (where progress is reported): left out of
# the version id, kept in the manifest.
NOT_IN_VERSION = frozenset({"report_to"})
# Pass-through sections (`trl:`, `peft:`) count only when they hold something.
EMPTY_NOT_IN_VERSION = frozenset({"trl", "peft"})


def version_id(
    name: str, schema_version: int, config: Mapping[str, Any], inputs: Sequence[InputRef]
) -> str:
    key = {
        "name": name,
        "schema_version": schema_version,
        "config": {
            k: v
            for k, v in config.items()
            if k not in NOT_IN_VERSION and not (k in EMPTY_NOT_IN_VERSION and not v)
        },
        "inputs": sorted((i.name, i.content_hash) for i in inputs),
    }
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:12]


def content_hash(files: Sequence[FileEntry], replace: Mapping[str, str] | None = None) -> str:
    """Over the files' paths and sha256s; ``replace`` gives the hash to use instead for some
    (tables without their timing columns)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{(replace or {}).get(f.path, f.sha256)}\n".encode())
    return h.hexdigest()


def file_entries(folder: Path) -> list[FileEntry]:
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
