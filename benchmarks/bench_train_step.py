"""Train step speed, in one process: our step overhead against TRL's plain GRPOTrainer
(`--compare overhead`, the default), or fp32 against bf16 (`--compare precision`).

overhead: both trainers get the same model, LoRA config, GRPOConfig, reward functions, seed and
query order (TRL's unshuffled sampler over the curriculum's first-epoch order), in fp32 and
without the stop at the box, so they generate the same completions; ours adds RAAE token
advantages, the cross-process gathers, the rollout log and the curriculum. Rounds alternate
(TRL, ours, TRL, ours, ...) to spread machine noise; the first step of every run is left out
(warm-up). Prints the median seconds per step of each, the ratio, and the share of our step
spent scoring rewards and computing advantages.

precision: (1) forward + backward of the LoRA model on a fixed batch of real prompts (8 × 300
tokens by default), fp32 then bf16 autocast, alternating rounds: median seconds of each, the
ratio, and both losses; (2) whole `rerec train` steps (generation with the stop at the box,
scoring, loss, update) with `--precision fp32` and `bf16`, alternating runs, first step of each
left out: median seconds per step and the ratio.

    python benchmarks/bench_train_step.py --model tiny
    python benchmarks/bench_train_step.py --model smollm2 --steps 4 --rounds 2   # needs make demo
    python benchmarks/bench_train_step.py --model smollm2 --compare precision --workdir W
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def plain_trl_trainer(cfg, inputs, folder: Path):
    """TRL's own GRPOTrainer on the same model, rewards, data order and arguments as a rerec
    run: the baseline of the step-overhead figure (the first epoch's order, which TRL's
    unshuffled sampler then follows)."""
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    from stages.llm.lora import lora_config
    from stages.rl.stage import trainer_parts

    p = trainer_parts(cfg, inputs, folder, "cpu")
    torch.manual_seed(cfg.seed)
    trainer = GRPOTrainer(
        model=p.model,
        reward_funcs=p.reward_funcs,
        args=p.args,
        train_dataset=p.rows.select(p.sampler.order),
        processing_class=p.tokenizer,
        peft_config=lora_config(cfg),
    )
    trainer.scorer = p.scorer
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def timed_run(
    cfg, inputs, folder: Path, plain: bool, stop_at_box: bool = False
) -> tuple[list[float], float, list]:
    from transformers import TrainerCallback

    from stages.rl.stage import make_trainer

    if plain:
        trainer = plain_trl_trainer(cfg, inputs, folder)
    else:
        trainer, _ = make_trainer(cfg, inputs, folder, "cpu", stop_at_box=stop_at_box)
    timer = type("Timer", (StepTimer, TrainerCallback), {})()
    trainer.add_callback(timer)
    trainer.train()
    ours = trainer.scorer.seconds + getattr(trainer, "advantage_seconds", 0.0)
    return timer.times[1:], ours, timer.lengths


def build_config(a: argparse.Namespace, tmp: Path, precision: str):
    from stages.core.store import ArtifactStore
    from stages.rl.config import TrainConfig

    if a.model == "tiny":
        from tests.fixtures.workdirs import build_toy_workdir

        store, model = build_toy_workdir(tmp)
        cfg = TrainConfig(
            model=str(model),
            steps=a.steps or 8,
            prompts_per_step=2,
            num_generations=4,
            max_completion_length=48,
            save_steps=10_000,
            precision=precision,
        )
    else:
        store = ArtifactStore(a.workdir)
        cfg = TrainConfig(
            queries=a.queries_name,
            steps=a.steps or 4,
            prompts_per_step=1,
            num_generations=4,
            max_completion_length=64,
            limit=64,
            save_steps=10_000,
            precision=precision,
        )
    return store, cfg


def overhead(a: argparse.Namespace, tmp: Path) -> None:
    from stages.rl.inputs import load_inputs

    store, cfg = build_config(a, tmp, "fp32")
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


def forward_backward(a: argparse.Namespace, store, cfg) -> dict[str, tuple[float, float]]:
    """Seconds and loss of one forward + backward (LM loss) of the LoRA model on a fixed
    batch of ``a.batch`` real training prompts cut to ``a.tokens`` tokens, in fp32 and
    under bf16 autocast, alternating rounds."""
    import torch
    from peft import get_peft_model

    from stages.llm.generation import autocast, load_model_folder
    from stages.llm.models import resolve_model
    from stages.llm.prompts import render_messages
    from stages.rl.inputs import load_inputs
    from stages.rl.stage import lora_config

    inputs = load_inputs(store, cfg)
    model, tok = load_model_folder(resolve_model(store, cfg.model)[1], torch.float32)
    torch.manual_seed(0)
    if a.fb_model != "full":  # full: every weight trainable, no adapter
        dropout = 0.0 if a.fb_model == "lora-no-dropout" else cfg.lora_dropout
        model = get_peft_model(model, lora_config(cfg.model_copy(update={"lora_dropout": dropout})))
    model.train()
    rows = inputs.train.to_dicts()
    text = "\n".join(
        tok.apply_chat_template(render_messages(q), tokenize=False) for q in rows[: a.batch * 4]
    )
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    need = a.batch * a.tokens
    ids = ids.repeat(need // len(ids) + 1)[:need].view(a.batch, a.tokens)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    cpu: dict[str, list[float]] = {"fp32": [], "bf16": []}
    losses: dict[str, float] = {}
    for r in range(a.fb_rounds + 1):  # round 0 warms up
        for precision in ("fp32", "bf16"):
            torch.manual_seed(1)  # the same LoRA dropout masks
            started, cpu_started = time.perf_counter(), time.process_time()
            with autocast(precision, "cpu"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            model.zero_grad(set_to_none=True)
            losses[precision] = loss.item()
            if r:
                times[precision].append(seconds)
                cpu[precision].append(cpu_seconds)
                print(
                    f"forward+backward round {r}: {precision} {seconds:.2f} s "
                    f"(CPU {cpu_seconds:.2f} s)",
                    flush=True,
                )
    return {
        p: (statistics.median(t), statistics.median(cpu[p]), losses[p]) for p, t in times.items()
    }


def precision(a: argparse.Namespace, tmp: Path) -> None:
    from stages.llm.generation import cpu_bf16_flags
    from stages.rl.inputs import load_inputs

    store, cfg = build_config(a, tmp, "fp32")
    fb = forward_backward(a, store, cfg) if a.fb_rounds else {}
    steps: dict[str, list[float]] = {"fp32": [], "bf16": []}
    lengths: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(a.rounds):
        for p in ("fp32", "bf16"):
            cfg_p = cfg.model_copy(update={"precision": p})
            inputs = load_inputs(store, cfg_p)
            t, _, n = timed_run(cfg_p, inputs, tmp / f"{p}-{r}", plain=False, stop_at_box=True)
            steps[p] += t
            lengths[p] += n
            print(
                f"round {r + 1}: {p} {statistics.median(t):.2f} s/step, "
                f"completion tokens {statistics.mean(n):.1f}",
                flush=True,
            )
    flags = ", ".join(cpu_bf16_flags()) or "no bf16 flags"
    print(f"{machine()} ({flags}); model {a.model}")
    if fb:
        (t32, c32, l32), (t16, c16, l16) = fb["fp32"], fb["bf16"]
        print(
            f"forward+backward {a.batch} x {a.tokens} tokens ({a.fb_model}), median of "
            f"{a.fb_rounds}: fp32 {t32:.2f} s, bf16 autocast {t16:.2f} s: {t32 / t16:.2f}x "
            f"(target >= 1.6x); process CPU time {c32:.2f} s vs {c16:.2f} s: {c32 / c16:.2f}x; "
            f"loss fp32 {l32:.4f}, bf16 {l16:.4f} (diff {abs(l32 - l16):.4f})"
        )
    if a.rounds:
        m32, m16 = statistics.median(steps["fp32"]), statistics.median(steps["bf16"])
        print(
            f"rerec train step ({cfg.prompts_per_step} prompt(s) x G {cfg.num_generations}, "
            f"<= {cfg.max_completion_length} tokens, stop at the box), median over "
            f"{len(steps['fp32'])} steps: fp32 {m32:.2f} s, bf16 {m16:.2f} s: {m32 / m16:.2f}x; "
            f"mean completion tokens fp32 {statistics.mean(lengths['fp32']):.1f}, "
            f"bf16 {statistics.mean(lengths['bf16']):.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--compare", choices=["overhead", "precision"], default="overhead")
    parser.add_argument("--steps", type=int, default=None, help="steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (0: none)")
    parser.add_argument("--fb-rounds", type=int, default=3, help="precision: forward+backward")
    parser.add_argument("--batch", type=int, default=8, help="precision: sequences")
    parser.add_argument("--tokens", type=int, default=300, help="precision: tokens a sequence")
    parser.add_argument(
        "--fb-model",
        choices=["lora", "lora-no-dropout", "full"],
        default="lora",
        help="precision: the forward+backward model (lora: the train defaults, r 16, dropout "
        "0.05; full: every weight trainable)",
    )
    parser.add_argument("--queries-name", default="queries", help="smollm2: queries artifact")
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("REREC_WORKDIR", REPO / "workdir"))
    )
    a = parser.parse_args()
    a.workdir = a.workdir.expanduser()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        (overhead if a.compare == "overhead" else precision)(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
