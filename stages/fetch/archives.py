"""Taking named files out of a wheel, zip or tar archive without trusting its member names."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from stages.core.errors import UserError

_CHUNK = 1 << 20


def _unsafe_name(name: str) -> bool:
    """A member name that could land outside the folder it is extracted into."""
    if not name or "\x00" in name:
        return True
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return ".." in PurePosixPath(norm).parts


def _members(archive: Path) -> tuple[str, list[str]]:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return "zip", zf.namelist()
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            bad = [m.name for m in tf.getmembers() if m.issym() or m.islnk() or m.isdev()]
            if bad:
                raise UserError(
                    f"{archive}: member {bad[0]!r} is a link or device; refusing the archive"
                )
            return "tar", tf.getnames()
    raise UserError(f"{archive}: not a wheel, zip or tar archive")


def safe_extract(
    archive: Path,
    members: Mapping[str, str],
    dest: Path,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Path]:
    """Copy each ``members`` entry (archive member -> path under ``dest``) out of ``archive``.

    Refuses the whole archive if any member name is absolute or climbs with ``..``, and any
    target that would resolve outside ``dest``. Returns the written paths by member name.
    """
    kind, names = _members(archive)
    unsafe = next((n for n in names if _unsafe_name(n)), None)
    if unsafe is not None:
        raise UserError(
            f"{archive}: member {unsafe!r} would be written outside the target folder; "
            "refusing the archive"
        )
    present = set(names)
    missing = [m for m in members if m not in present]
    if missing:
        raise UserError(f"{archive}: lacks member {missing[0]!r}; is it the right file?")
    root = dest.resolve()
    targets: dict[str, Path] = {}
    for member, rel in members.items():
        target = (root / rel).resolve()
        if _unsafe_name(rel) or not target.is_relative_to(root) or target == root:
            raise UserError(f"target path {rel!r} for member {member!r} escapes {dest}")
        targets[member] = target

    def copy(src: IO[bytes], target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))

    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for member, target in targets.items():
                with zf.open(member) as src:
                    copy(src, target)
    else:
        with tarfile.open(archive) as tf:
            for member, target in targets.items():
                src = tf.extractfile(member)
                if src is None:
                    raise UserError(f"{archive}: member {member!r} is not a regular file")
                with src:
                    copy(src, target)
    return targets


def member_sizes(archive: Path, members: Mapping[str, str]) -> int:
    """Total uncompressed bytes of ``members`` (for a progress bar); 0 when unknown."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return sum(zf.getinfo(m).file_size for m in members)
        with tarfile.open(archive) as tf:
            return sum(tf.getmember(m).size for m in members)
    except (KeyError, OSError, tarfile.TarError):
        return 0
