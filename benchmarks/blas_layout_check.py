"""Does an RL run repeat bit for bit when only its process's memory layout changes?

Resumes a `rerec train` run from one of its checkpoints in two processes that differ only in
things that should not matter, PYTHONHASHSEED and the size of the environment, runs it to a
later step, and prints each step's gradient norm from both side by side, with the first step
where they part. By default MKL runs as rerec asks (``MKL_CBWR=AUTO,STRICT``,
`stages.core.numerics`); ``--without-cnr`` turns that off (``MKL_CBWR`` empty), which is how
the experiment's runs were made before 2026-11-30.

    REREC_WORKDIR=~/rerec-runs/fidelity-smollm2-cpu python benchmarks/blas_layout_check.py \\
        --checkpoint CHECKPOINT_DIR --until 12 -- --model sft --steps 48 ... --output policy-x

The options after ``--`` are the run's own `rerec train` options (the same ones, so that the
checkpoint is this run's; ``--output`` a name of its own: its run folder is used and removed).
Each process saves a checkpoint every step (``--save-steps 1``, which changes no arithmetic)
and is stopped (SIGTERM, which rerec takes as Ctrl-C) once step ``--until`` is saved.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LAYOUTS = {  # name -> environment changes; nothing here should change a number
    "hash 0": {"PYTHONHASHSEED": "0"},
    "hash 1, longer env": {"PYTHONHASHSEED": "1", "REREC_LAYOUT_PADDING": "x" * 777},
}


def run_folder(command: list[str], env: dict[str, str], output: str) -> Path:
    """The run folder of ``command``, emptied first (rerec's `--resume` names it when it holds
    nothing; one holding a checkpoint would be resumed)."""
    runs = Path(env.get("REREC_WORKDIR", "workdir")) / ".runs"
    for old in runs.glob(f"{output}-*"):
        shutil.rmtree(old)
    probe = subprocess.run(
        [*command, "--resume", "--quiet"], env=env, capture_output=True, text=True
    )
    found = re.search(r"no checkpoint in (\S+)", probe.stderr)
    if found is None:
        sys.exit(
            f"error: no empty run folder for these options; rerec said: {probe.stderr.strip()}"
        )
    return Path(found.group(1))


def steps_from(
    checkpoint: Path, until: int, command: list[str], env: dict[str, str], output: str
) -> list[dict]:
    folder = run_folder(command, env, output)
    if folder.exists():  # the probe may leave it behind, empty
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copytree(checkpoint, folder / checkpoint.name)
    state = folder / f"checkpoint-{until}" / "rerec_state.json"
    proc = subprocess.Popen(
        [*command, "--resume", "--quiet"], env=env, stderr=subprocess.PIPE, text=True
    )
    while not state.exists() and proc.poll() is None:
        time.sleep(1)
    time.sleep(2)  # the state file is the checkpoint's last
    if proc.poll() is None:  # rerec stops as on Ctrl-C (SIGINT may be ignored in a background job)
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    if not state.exists():
        sys.exit(f"error: the run stopped before step {until}: {err.strip().splitlines()[-1:]}")
    log = json.loads(state.read_text())["log"]
    shutil.rmtree(folder)
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a checkpoint-N folder of the run"
    )
    parser.add_argument("--until", type=int, required=True, help="the step to run to")
    parser.add_argument(
        "--without-cnr", action="store_true", help="MKL_CBWR empty: MKL as it comes"
    )
    parser.add_argument(
        "train", nargs=argparse.REMAINDER, help="-- then the run's `rerec train` options"
    )
    args = parser.parse_args()
    train = [a for a in args.train if a != "--"]
    if "--output" not in train[:-1]:
        sys.exit("error: give the run an --output name of its own (its run folder is removed)")
    output = train[train.index("--output") + 1]
    start = int(args.checkpoint.name.rsplit("-", 1)[-1])
    if not (args.checkpoint / "rerec_state.json").is_file() or args.until <= start:
        sys.exit(
            f"error: --checkpoint {args.checkpoint}: no rerec checkpoint before step {args.until}"
        )
    if "--save-steps" in train[:-1]:  # an option given twice keeps its first value
        at = train.index("--save-steps")
        del train[at : at + 2]
    command = [sys.executable, "-m", "rerec_cli", "train", *train, "--save-steps", "1"]
    base = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "PYTHONHASHSEED")}
    if args.without_cnr:
        base["MKL_CBWR"] = ""
    logs = {
        name: steps_from(args.checkpoint, args.until, command, {**base, **extra}, output)
        for name, extra in LAYOUTS.items()
    }
    (a_name, a), (b_name, b) = logs.items()
    print(
        f"MKL: {'CNR off (MKL_CBWR empty)' if args.without_cnr else 'as rerec asks (AUTO,STRICT)'}"
    )
    print(f"{'step':>4}  {'grad norm, ' + a_name:>24}  {'grad norm, ' + b_name:>34}  same")
    parted = None
    for x, y in zip(a, b, strict=True):
        if x["step"] <= start:
            continue
        same = {k: v for k, v in x.items() if k != "seconds"} == {
            k: v for k, v in y.items() if k != "seconds"
        }
        if not same and parted is None:
            parted = x["step"]
        print(
            f"{x['step']:>4}  {x['grad_norm']!r:>24}  {y['grad_norm']!r:>34}  "
            + ("yes" if same else "NO")
        )
    print(
        f"steps {start + 1}-{args.until}: "
        + (
            "every logged figure bit for bit the same"
            if parted is None
            else f"the runs part at step {parted}"
        )
    )


if __name__ == "__main__":
    main()
