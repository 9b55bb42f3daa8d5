"""What every benchmark script shares: running the real `rerec` command in a fresh process
(timed, with its peak memory), making sure the raw data is fetched, and a scratch store that
links to the fetched raw artifacts without copying them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RERUN = [sys.executable, "-m", "rerec_cli.main"]
RAW = ("ml-100k", "wikidata-films")


def run_rerec(args: list[str], workdir: Path) -> tuple[float, float]:
    """Run `rerec ARGS` against ``workdir`` in a fresh process; return (seconds, peak RSS GiB).
    Exits with the command's stderr if it fails."""
    env = {**os.environ, "REREC_WORKDIR": str(workdir)}
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*RERUN, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"rerec {' '.join(args)} failed:\n{err.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def ensure_fetched(workdir: Path, names: tuple[str, ...] = RAW) -> None:
    missing = [n for n in names if not (workdir / n / "latest").exists()]
    if missing:
        subprocess.run([*RERUN, "--workdir", str(workdir), "fetch", *missing], check=True, cwd=REPO)


def scratch_store(raw_workdir: Path, parent: Path, names: tuple[str, ...] = RAW) -> Path:
    """A new store under ``parent`` holding the raw artifacts of ``raw_workdir`` (their
    manifests copied, their files linked through the `latest` symlink layout)."""
    store = parent / "workdir"
    store.mkdir()
    for name in names:
        shutil.copytree(raw_workdir / name, store / name, symlinks=True)
    return store


def machine() -> str:
    return f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}"
