"""`benchmarks/bench_train_gpu.py`: where a step's seconds go, computed by hand (the script's
CPU smoke mode runs in `test_speed_options.py`, on that module's toy workdir)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_train_gpu import phase_line  # noqa: E402


def test_phase_line_takes_each_part_per_step_then_the_median() -> None:
    # timers are keyed by the global step during the step (0, 1); the log by the step done (1, 2)
    spent = {
        "rollouts": {0: 3.0, 1: 5.0},
        "rewards": {0: 0.1, 1: 0.1},
        "prepare": {0: 3.5, 1: 5.5},  # other preparation 0.4 both times
        "loss forward": {0: 1.0, 1: 1.0},
        "train step": {0: 6.0, 1: 8.0},  # backward 1.5 both times
    }
    log = [{"step": 1, "seconds": 6.5}, {"step": 2, "seconds": 8.2}]  # the rest 0.5, 0.2
    line = phase_line(spent, log)
    got = dict(re.findall(r"([a-z ]+?) (-?[\d.]+) s \(", line))
    assert {k.strip(): float(v) for k, v in got.items()} == {
        "rollouts": 4.0,
        "rewards": 0.1,
        "other preparation": 0.4,
        "loss forward": 1.0,
        "backward": 1.5,
        "optimizer and the rest": 0.35,
    }
    assert "rollouts 4.00 s (54%)" in line  # of the median step, 7.35 s
