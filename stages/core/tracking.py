"""Experiment tracking for the training stages: TRL's `report_to` with the trackers checked up
front, runs named after the artifact they write, TensorBoard logs kept in the workdir.

Where a run reports to never changes what it writes, so `report_to` is left out of the version
id (`stages.core.manifest.NOT_IN_VERSION`): the same run with and without a tracker is the same
artifact.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path

from stages.core.errors import UserError

# tracker -> the package it needs (the pip extra of the same name installs it)
PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "trackio": "trackio",
}
LOGS = ".logs"


def report_to(trackers: Sequence[str]) -> list[str] | str:
    """TRL's `report_to` for these trackers ("none" for none). Each must be one transformers
    knows and have its package installed: a typo or a missing package is one line before any
    model loads, not a failure after it."""
    names = [t for t in trackers if t != "none"]
    if not names:
        return "none"
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(sorted(INTEGRATION_TO_CALLBACK))
            raise UserError(f"--report-to {name}: not a tracker transformers knows ({known})")
        package = PACKAGES.get(name, name)
        if importlib.util.find_spec(package.replace("-", "_")) is None:
            extra = f"rerec[{name}]" if name in PACKAGES else package
            raise UserError(
                f"--report-to {name} needs the {package} package: pip install '{extra}'"
            )
    return names


def keep_tensorboard_logs(output_dir: Path, workdir: Path, run_name: str) -> Path | None:
    """Copy the TensorBoard event files TRL wrote under ``output_dir/runs`` (a folder removed
    after the run) to ``<workdir>/.logs/<run_name>/``; that folder, or None if there were none.
    `tensorboard --logdir <workdir>/.logs` shows every run."""
    found = sorted((output_dir / "runs").glob("*/events.out.tfevents.*"))
    if not found:
        return None
    target = workdir / LOGS / run_name
    target.mkdir(parents=True, exist_ok=True)
    for event_file in found:
        shutil.copy2(event_file, target / event_file.name)
    return target
