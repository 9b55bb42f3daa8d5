"""The RL loss's forward + backward with each prompt run once for its G completions
(`rerec train --share-prompts`, `stages/rl/shared_prompts.py`) against TRL's pass (every row
runs its prompt), in one process, alternating rounds.

A step's batch as `rerec train` builds it: ``--prompts`` training queries rendered as the
policy renders them (left-padded), each with G completions (real sft targets of the workdir,
cut to ``--completion-tokens``; what they say does not change the cost), SmolLM2-135M with LoRA
(train defaults), bf16 autocast where the CPU has it, TRL's fused LM head scoring the
completion tokens only. TRL's pass runs in micro-batches of ``--micro-batch`` rows (the
experiment's 2: a whole step of index prompts at once needs ~22 GiB; `--trl-whole-step` adds
it); the shared pass takes the whole step in one chunk.
Prints the median seconds of each, the speed-up, and, with LoRA dropout off, the largest
difference of the completion log-probabilities between the two passes.

``--part rollouts`` times the step's generation instead: the policy's rollout model (a bf16 CPU
run's merged bf16 copy, `bf16_rollout_model`) sampling ``--completion-tokens`` tokens for each
row, with every row running its prompt (TRL) against one prompt pass per distinct prompt
copied to its rows (`shared_prompt_cache`), from the same seed; it prints how many rows
sampled the same tokens both ways.

    python benchmarks/bench_shared_prompts.py --workdir ~/rerec-runs/fidelity-smollm2-cpu \\
        --candidate-facts index --prompts 2 --generations 4 --rounds 2
    python benchmarks/bench_shared_prompts.py --workdir ~/rerec-runs/fidelity-smollm2-cpu \\
        --candidate-facts index --prompts 2 --generations 4 --rounds 3 --part rollouts
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workdir"))
    parser.add_argument("--queries-name", default="queries")
    parser.add_argument("--model", default="smollm2-135m", help="model artifact or folder")
    parser.add_argument("--candidate-facts", default="compact")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="G: completions a prompt")
    parser.add_argument("--completion-tokens", type=int, default=150)
    parser.add_argument("--micro-batch", type=int, default=2, help="TRL's micro-batch rows")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (after a warm-up)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument(
        "--trl-whole-step", action="store_true", help="also TRL's pass on the whole step at once"
    )
    parser.add_argument(
        "--part", choices=["loss", "rollouts"], default="loss", help="what of a step to time"
    )
    a = parser.parse_args()

    import torch
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from stages.core.store import ArtifactStore
    from stages.llm.generation import (
        autocast,
        cpu_bf16_flags,
        load_model_folder,
        resolve_precision,
    )
    from stages.llm.lm_head import score_label_positions_only
    from stages.llm.lora import lora_config
    from stages.llm.models import resolve_model
    from stages.llm.prompts import render_messages
    from stages.queries.reader import read_split
    from stages.rl.config import TrainConfig
    from stages.rl.shared_prompts import shared_prompt_cache, shared_prompt_logps
    from stages.rl.trainer import bf16_rollout_model

    score_label_positions_only()
    store = ArtifactStore(a.workdir)
    precision = resolve_precision(a.precision, "cpu")
    model, tok = load_model_folder(resolve_model(store, a.model)[1], torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    queries = read_split(store.resolve(a.queries_name), "train", limit=a.prompts, seed=0)
    prompts = [
        tok.apply_chat_template(
            render_messages(q, candidate_facts=a.candidate_facts, named_facts=True),
            tokenize=False,
            add_generation_prompt=True,
        )
        for q in queries.to_dicts()
    ]
    tok.padding_side = "left"
    p = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    g = a.generations
    prompt_ids = p["input_ids"].repeat_interleave(g, 0)
    prompt_mask = p["attention_mask"].repeat_interleave(g, 0)
    torch.manual_seed(0)
    rows = prompt_ids.size(0)
    completion = torch.randint(100, len(tok) - 100, (rows, a.completion_tokens))
    completion_mask = torch.ones_like(completion)
    for r in range(rows):  # completions end at different lengths, as rollouts do
        completion_mask[r, a.completion_tokens - 7 * r :] = 0
    ids = torch.cat([prompt_ids, completion], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    k = a.completion_tokens

    def context():
        return autocast(precision, "cpu")

    def trl_pass(net, micro: int):
        out = []
        for s in range(0, rows, micro):
            labels = ids[s : s + micro].masked_fill(mask[s : s + micro] == 0, -100)
            labels[:, :-k] = -100
            with context():
                o = net(
                    input_ids=ids[s : s + micro],
                    attention_mask=mask[s : s + micro],
                    labels=labels,
                    fused_lm_head=True,
                )
            out.append(o.log_probs[:, -k:])
        return torch.cat(out)

    def shared_pass(net, micro: int):
        return shared_prompt_logps(net, ids, mask, k, context)[0]

    ways = {
        f"TRL, micro-batches of {a.micro_batch}": (trl_pass, a.micro_batch),
        f"shared prompts, one chunk of {rows}": (shared_pass, rows),
    }
    if a.trl_whole_step:  # index prompts: ~22 GiB for 8 rows of ~1,150 tokens
        ways[f"TRL, one micro-batch of {rows}"] = (trl_pass, rows)
    net = get_peft_model(model, lora_config(TrainConfig()))  # train defaults, dropout 0.05
    if a.part == "rollouts":
        generator = bf16_rollout_model(net) if precision == "bf16" else net.eval()
        rollouts(a, generator, tok, prompt_ids, prompt_mask, shared_prompt_cache, precision)
        return
    net.train()
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    real = int(mask.sum())
    for r in range(a.rounds + 1):  # round 0 warms up
        for name, (run, micro) in ways.items():
            net.zero_grad(set_to_none=True)
            started = time.perf_counter()
            logps = run(net, micro)
            (-(logps * completion_mask).sum() / completion_mask.sum()).backward()
            took = time.perf_counter() - started
            if r:
                seconds[name].append(took)
                print(f"round {r}: {name}: {took:.2f} s", flush=True)
    # agreement, without dropout (its masks differ between the passes by construction)
    with contextlib.suppress(AttributeError):
        for module in net.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    with torch.no_grad():
        unshared = trl_pass(net, a.micro_batch)
        diff = (unshared - shared_pass(net, rows)).abs()[completion_mask.bool()]
    flags = ", ".join(cpu_bf16_flags()) or "no bf16 flags"
    print(f"{machine()} ({flags}); {precision}; torch threads {torch.get_num_threads()}")
    print(
        f"{a.prompts} prompts x G {g}: prompts {p['attention_mask'].sum(1).tolist()} tokens "
        f"(padded to {p['input_ids'].size(1)}), completions up to {k}; {real} real tokens"
    )
    base = statistics.median(seconds[next(iter(ways))])
    print(f"| loss forward + backward (median of {a.rounds}) | seconds | speed-up |")
    print("|---|---|---|")
    for name in ways:
        med = statistics.median(seconds[name])
        print(f"| {name} | {med:.2f} s | {base / med:.2f}x |")
    print(f"largest log-probability difference without dropout: {float(diff.max()):.2e}")


def rollouts(a, generator, tok, prompt_ids, prompt_mask, shared_prompt_cache, precision) -> None:
    """Time the step's sampling both ways (alternating rounds after a warm-up)."""
    import torch

    from stages.llm.generation import cpu_bf16_flags

    k = a.completion_tokens
    seconds: dict[str, list[float]] = {"every row runs its prompt": [], "shared prompts": []}
    sampled: dict[str, torch.Tensor] = {}
    for r in range(a.rounds + 1):
        for name in seconds:
            torch.manual_seed(r)
            started = time.perf_counter()
            cache = None
            if name == "shared prompts":
                cache = shared_prompt_cache(generator, prompt_ids, prompt_mask)
                assert cache is not None
            with torch.no_grad():
                out = generator.generate(
                    input_ids=prompt_ids, attention_mask=prompt_mask, cache=cache,
                    do_sample=True, max_new_tokens=k, min_new_tokens=k,
                    pad_token_id=tok.pad_token_id,
                )  # fmt: skip
            took = time.perf_counter() - started
            sampled[name] = out[:, prompt_ids.size(1) :]
            if r:
                seconds[name].append(took)
                print(f"round {r}: {name}: {took:.2f} s", flush=True)
    a_, b_ = sampled.values()
    same = int((a_ == b_).all(dim=1).sum())
    flags = ", ".join(cpu_bf16_flags()) or "no bf16 flags"
    print(f"{machine()} ({flags}); {precision}; torch threads {torch.get_num_threads()}")
    print(
        f"{a.prompts} prompts x G {a.generations}: prompts "
        f"{prompt_mask[:: a.generations].sum(1).tolist()} tokens (padded to "
        f"{prompt_ids.size(1)}), {k} sampled tokens a row"
    )
    base = statistics.median(next(iter(seconds.values())))
    print(f"| rollouts of a step (median of {a.rounds}) | seconds | speed-up |")
    print("|---|---|---|")
    for name, values in seconds.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} s | {base / med:.2f}x |")
    print(f"rows that sampled the same tokens both ways (last round): {same} of {len(a_)}")


if __name__ == "__main__":
    main()
