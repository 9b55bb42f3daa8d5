"""Step overhead of `rerec train` against TRL's plain GRPOTrainer, in one process.

Both trainers get the same model, LoRA config, GRPOConfig, reward functions, seed and query
order (TRL's unshuffled sampler over the curriculum's first-epoch order), so they generate the
same completions; ours adds RAAE token advantages, the cross-process gathers, the rollout log
and the curriculum. Rounds alternate (TRL, ours, TRL, ours, ...) to spread machine noise;
the first step of every run is left out (warm-up). Prints the median seconds per step of
each, the ratio, and the share of our step spent scoring rewards and computing advantages.

    python benchmarks/bench_train_step.py --model tiny
    python benchmarks/bench_train_step.py --model smollm2 --steps 4 --rounds 2   # needs make demo
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import REPO, machine  # noqa: E402


class StepTimer:
    def __init__(self):
        self.times: list[float] = []
        self.lengths: list[float] = []
        self._last = None

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "completions/mean_length" in logs:
            self.lengths.append(round(float(logs["completions/mean_length"]), 3))

    def on_step_begin(self, args, state, control, **kw):
        if self._last is None:
            self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def timed_run(cfg, inputs, folder: Path, plain: bool) -> tuple[list[float], float, list]:
    from transformers import TrainerCallback

    from stages.train import make_trainer

    trainer, _ = make_trainer(cfg, inputs, folder, "cpu", plain_trl=plain)
    timer = type("Timer", (StepTimer, TrainerCallback), {})()
    trainer.add_callback(timer)
    trainer.train()
    ours = trainer.scorer.seconds + getattr(trainer, "advantage_seconds", 0.0)
    return timer.times[1:], ours, timer.lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--steps", type=int, default=None, help="steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / "workdir")
    a = parser.parse_args()

    from stages.store import ArtifactStore
    from stages.train import load_inputs
    from stages.train_config import TrainConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if a.model == "tiny":
        from tests.train_fixtures import build_toy_workdir

        store, model = build_toy_workdir(tmp)
        cfg = TrainConfig(
            model=str(model),
            steps=a.steps or 8,
            prompts_per_step=2,
            num_generations=4,
            max_completion_length=48,
            save_steps=10_000,
        )
    else:
        store = ArtifactStore(a.workdir)
        cfg = TrainConfig(
            steps=a.steps or 4,
            prompts_per_step=1,
            num_generations=4,
            max_completion_length=64,
            limit=64,
            save_steps=10_000,
        )
    inputs = load_inputs(store, cfg)
    trl_steps, our_steps, our_work = [], [], []
    for r in range(a.rounds):
        t, _, trl_len = timed_run(cfg, inputs, tmp / f"trl-{r}", plain=True)
        trl_steps += t
        o, work, our_len = timed_run(cfg, inputs, tmp / f"ours-{r}", plain=False)
        same = "same" if trl_len == our_len else f"DIFFERENT ({trl_len} vs {our_len})"
        our_steps += o
        our_work.append(work / (cfg.steps or 1))
        print(
            f"round {r + 1}: TRL {statistics.median(t):.3f} s/step, "
            f"rerec {statistics.median(o):.3f} s/step; completion lengths {same}",
            flush=True,
        )
    trl_med, our_med = statistics.median(trl_steps), statistics.median(our_steps)
    work = statistics.median(our_work)
    print(f"{machine()}; model {a.model}; {cfg.steps} steps x {a.rounds} rounds")
    print(f"TRL GRPOTrainer   median {trl_med:.3f} s/step ({len(trl_steps)} steps)")
    print(f"rerec (RAAE+cur.) median {our_med:.3f} s/step ({len(our_steps)} steps)")
    print(f"overhead: {our_med / trl_med:.3f}x  (target <= 1.10x)")
    print(
        f"rewards + advantages + logging: {work * 1000:.1f} ms/step "
        f"= {100 * work / our_med:.2f}% of the step (target <= 2%)"
    )


if __name__ == "__main__":
    main()
