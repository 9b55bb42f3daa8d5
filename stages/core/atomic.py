"""Atomic writes in the workdir: temporary names that tell a live write from a killed one,
one-step renames and swaps, the `latest` symlink."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from stages.core.errors import UserError

LATEST = "latest"
TMP_PREFIX = ".tmp-"


def write_durably(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` whole or not at all, and on disk before returning: ``write(tmp)`` fills
    a temporary file next to it, which is flushed, renamed into place, and its folder flushed
    (a kill or a power cut leaves the old file or none, never a part of the new one)."""
    tmp = path.with_name(tmp_name(path.name))
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exchange(a: Path, b: Path) -> bool:
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


def tmp_name(label: str) -> str:
    # The writer's pid comes first so a later write can tell a live write from a killed one.
    return f"{TMP_PREFIX}{os.getpid()}-{label}-{secrets.token_hex(3)}"


def swap_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.rename(tmp, final)
    elif exchange(tmp, final):  # --force: one atomic swap, the old version lands in tmp
        shutil.rmtree(tmp, ignore_errors=True)
    else:  # no renameat2 here: a brief moment without the version
        trash = final.with_name(tmp_name(f"old-{final.name}"))
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)


def point_latest(base: Path, vid: str) -> None:
    link = base / LATEST
    if link.is_symlink() and os.readlink(link) == vid:
        return
    tmp_link = base / tmp_name("latest")
    os.symlink(vid, tmp_link)
    os.replace(tmp_link, link)  # atomic on POSIX


def remove_stale_tmp(base: Path) -> None:
    """Remove what killed writes left: only names this module makes (``.tmp-<pid>-...``)
    of processes that are gone."""
    for p in base.glob(f"{TMP_PREFIX}*"):
        pid_text = p.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
        else:
            shutil.rmtree(p, ignore_errors=True)


# Locks this process holds: (store root, name) -> (file descriptor, depth).
_HELD_LOCKS: dict[tuple[Path, str], tuple[int, int]] = {}


@contextlib.contextmanager
def hold_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold the write lock ``folder/<name>.lock`` (re-entrant within a process). A second
    process that wants it is refused at once with the holder's pid, rather than waiting
    behind a training run or overwriting its result."""
    held = _HELD_LOCKS.get((folder, name))
    if held is not None:
        _HELD_LOCKS[(folder, name)] = (held[0], held[1] + 1)
        try:
            yield
        finally:
            fd, depth = _HELD_LOCKS[(folder, name)]
            _HELD_LOCKS[(folder, name)] = (fd, depth - 1)
        return
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
    _HELD_LOCKS[(folder, name)] = (fd, 1)
    try:
        yield
    finally:
        _HELD_LOCKS.pop((folder, name), None)
        os.close(fd)  # releases the lock
