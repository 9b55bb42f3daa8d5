"""GPU training benchmark: 5 `rerec train` steps with a model of Qwen2.5-3B's architecture.

Random weights (speed does not depend on them), the tokenizer of the fetched SmolLM2 (the hub is
not reachable; the embedding table is therefore 49,152 rows instead of Qwen's 151,936), LoRA on
every linear layer, bf16, G = 8. Prints seconds per step, where they go (rollouts, rewards,
loss forward, backward, the rest), generated tokens per second and the peak GPU memory. Needs
the demo's artifacts (queries, graph, cf; the tokenizer from smollm2-135m or `--tokenizer`).

    python benchmarks/bench_train_gpu.py      # on a CUDA machine (about 3 min on an H200)
    python benchmarks/bench_train_gpu.py --device cpu --layers 1 --hidden 64 --steps 2  # smoke
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

QWEN25_3B = dict(
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


# the parts of a GRPO step, each a trainer method TRL calls once per step here (one generation
# per optimizer step, one micro-batch): name -> method
PHASES = {
    "rollouts": "_generate_single_turn",
    "rewards": "_calculate_rewards",
    "prepare": "_prepare_inputs",  # rollouts + rewards + advantages
    "loss forward": "compute_loss",
    "train step": "training_step",  # prepare + loss forward + backward
}


def time_phases(trainer, cuda: bool) -> dict[str, dict[int, float]]:
    """Wrap the trainer's PHASES methods to add their seconds (synchronised on CUDA) per step."""
    import torch

    spent: dict[str, dict[int, float]] = {name: {} for name in PHASES}

    def timer(call, by_step: dict[int, float]):
        def timed(*a, **k):
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            try:
                return call(*a, **k)
            finally:
                if cuda:
                    torch.cuda.synchronize()
                step = trainer.state.global_step
                by_step[step] = by_step.get(step, 0.0) + time.perf_counter() - started

        return timed

    for name, method in PHASES.items():
        setattr(trainer, method, timer(getattr(trainer, method), spent[name]))
    return spent


def phase_line(spent: dict[str, dict[int, float]], log: list[dict]) -> str:
    """Median over steps of each part's seconds (the parts measured as differences are taken
    per step, then the median), and its share of the median step."""
    seconds = {row["step"] - 1: row["seconds"] for row in log}  # timers key the step before

    def at(name: str, step: int) -> float:
        return spent[name].get(step, 0.0)

    parts = {
        "rollouts": lambda n: at("rollouts", n),
        "rewards": lambda n: at("rewards", n),
        "other preparation": lambda n: at("prepare", n) - at("rollouts", n) - at("rewards", n),
        "loss forward": lambda n: at("loss forward", n),
        "backward": lambda n: at("train step", n) - at("prepare", n) - at("loss forward", n),
        "optimizer and the rest": lambda n: seconds[n] - at("train step", n),
    }
    total = statistics.median(seconds.values())
    medians = {name: statistics.median(part(n) for n in seconds) for name, part in parts.items()}
    return "; ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in medians.items())


def write_model(folder: Path, tokenizer_dir: Path, layers: int | None, hidden: int | None) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    arch = dict(QWEN25_3B)
    if layers:
        arch["num_hidden_layers"] = layers
    if hidden:
        arch.update(hidden_size=hidden, intermediate_size=hidden * 4, num_attention_heads=4)
        arch["num_key_value_heads"] = 2
    config = Qwen2Config(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **arch,
    )
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2.5-3B architecture, {n / 1e6:,.1f}M parameters (random, bf16)", flush=True)
    del model
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "workdir")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers (smoke test)")
    parser.add_argument("--hidden", type=int, default=None, help="smaller width (smoke test)")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="folder with the tokenizer files (default: the workdir's smollm2-135m artifact)",
    )
    parser.add_argument(
        "--share-prompts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one prompt pass per distinct prompt (rerec train's default)",
    )
    a = parser.parse_args()

    import torch

    from stages.core.store import ArtifactStore
    from stages.rl.config import TrainConfig
    from stages.rl.inputs import load_inputs
    from stages.rl.stage import make_trainer

    store = ArtifactStore(a.workdir)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    tokenizer = a.tokenizer or store.resolve("smollm2-135m").file("model")
    model_dir = write_model(tmp / "qwen2.5-3b-arch", tokenizer, a.layers, a.hidden)
    cfg = TrainConfig(
        model=str(model_dir),
        steps=a.steps,
        prompts_per_step=a.prompts_per_step,
        num_generations=a.generations,
        max_completion_length=a.max_completion_length,
        limit=a.steps * a.prompts_per_step,
        device=a.device,
        save_steps=10_000,
        share_prompts=a.share_prompts,
    )
    inputs = load_inputs(store, cfg)
    trainer, _ = make_trainer(cfg, inputs, tmp / "run", a.device)
    spent = time_phases(trainer, a.device == "cuda")
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    log = trainer.run_state.log
    secs = [r["seconds"] for r in log]
    tokens = [
        r["completion_length_mean"] * a.prompts_per_step * a.generations
        for r in log
        if r["completion_length_mean"] is not None
    ]
    print(f"{machine()}; device {a.device}; share_prompts {a.share_prompts}")
    print(f"steps {len(log)}; wall {wall:.1f} s; median {statistics.median(secs):.2f} s/step")
    print(
        f"generated tokens/s (median over steps): "
        f"{statistics.median(t / s for t, s in zip(tokens, secs, strict=False)):.0f}"
    )
    print(f"per step (medians): {phase_line(spent, log)}")
    rollout_s = statistics.median(spent["rollouts"].values()) if spent["rollouts"] else None
    if rollout_s:
        print(f"generated tokens/s while sampling: {statistics.median(tokens) / rollout_s:.0f}")
    if a.device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
