"""The finished batches of one batched generation, saved as they finish, so that an interrupted
`rerec eval` goes on where it stopped (`--resume`) and writes what an unbroken run writes.

The run folder (`ArtifactStore.run_folder`) holds one ``batch-<n>.parquet`` per finished batch
(its rows' input positions, completions and token counts), each written durably
(`write_durably`: a kill or a power cut leaves whole batches only; an unreadable one is
generated again), and ``fingerprint.json``: a hash of what the answers depend on besides the
weights (the prompts as the model reads them, in order, the batch size, token limit, sampling,
seed, device and precision). The folder's name already pins the config and the input versions;
the fingerprint refuses a resume whose prompts differ all the same (another version of rerec
rendering them otherwise) or that runs elsewhere (a GPU's bf16 run resumed on a CPU). Batch
``n`` is always the same prompts (`generate` batches them by a fixed order) and draws from its
own seed, so skipping the saved batches changes none of the others.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from stages.core.atomic import write_durably
from stages.core.errors import UserError

FINGERPRINT = "fingerprint.json"


def fingerprint(prompts: Sequence[str], **settings: object) -> str:
    """sha256 of the prompts (in order) and the generation settings."""
    data = json.dumps({"prompts": list(prompts), **settings}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def has_saved(folder: Path) -> bool:
    """Whether ``folder`` holds at least one finished batch."""
    return folder.is_dir() and any(folder.glob("batch-*.parquet"))


class SavedBatches:
    """The saved batches of one run folder. ``resume``: keep and reuse what is there (refused
    when it was generated from other prompts or settings); otherwise start empty."""

    def __init__(self, folder: Path, *, resume: bool) -> None:
        self.folder = folder
        self.resume = resume
        self.batches: dict[int, pl.DataFrame] = {}

    def open(self, print_: str) -> None:
        """Start (or, resuming, check and load) the folder for generations with fingerprint
        ``print_``."""
        stamp = self.folder / FINGERPRINT
        if not self.resume:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            write_durably(stamp, lambda tmp: tmp.write_text(json.dumps({"sha256": print_})))
            return
        try:
            saved = json.loads(stamp.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            saved = None
        if saved != print_:
            raise UserError(
                f"--resume: the answers saved in {self.folder} were generated from other prompts "
                "or settings; rerun without --resume"
            )
        for path in sorted(self.folder.glob("batch-*.parquet")):
            try:
                self.batches[int(path.stem.removeprefix("batch-"))] = pl.read_parquet(path)
            except (OSError, ValueError, pl.exceptions.PolarsError):
                continue  # unreadable (a disk that lost it): generated again

    @property
    def answers(self) -> int:
        """How many answers are saved."""
        return sum(b.height for b in self.batches.values())

    def get(self, batch: int, positions: Sequence[int]) -> tuple[list[str], list[int]] | None:
        """The saved completions and token counts of batch ``batch`` (None: not saved)."""
        frame = self.batches.get(batch)
        if frame is None:
            return None
        if frame["position"].to_list() != list(positions):
            raise UserError(
                f"--resume: batch {batch} saved in {self.folder} holds other prompts; rerun "
                "without --resume"
            )
        return frame["text"].to_list(), frame["tokens"].to_list()

    def put(
        self, batch: int, positions: Sequence[int], texts: Sequence[str], tokens: Sequence[int]
    ) -> None:
        """Save a finished batch."""
        frame = pl.DataFrame(
            {"position": list(positions), "text": list(texts), "tokens": list(tokens)},
            schema={"position": pl.Int64, "text": pl.String, "tokens": pl.Int64},
        )
        write_durably(self.folder / f"batch-{batch:05d}.parquet", frame.write_parquet)
        self.batches[batch] = frame
