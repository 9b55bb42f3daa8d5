"""The loss's LM head on a CPU: every position scored (TRL's CPU default) against the labelled
positions only (`stages.llm.lm_head.score_label_positions_only`, what sft and train use), in
one process, fp32 and bf16 autocast, alternating rounds.

One forward + backward of the LoRA model (train defaults: r 16, dropout 0.05, the same dropout
masks for every run) through TRL's fused LM head, on real sft examples: prompts as the sft
renders them, targets written from the graph, labels on the targets only. Prints the median
seconds of each way, the speed-up, bf16 against fp32 for each way, and whether the loss and the
LoRA gradients of the two ways agree (largest absolute difference).

    python benchmarks/bench_lm_head.py --workdir W          # W: a workdir after `make demo`
    python benchmarks/bench_lm_head.py --workdir ~/rerec-runs/fidelity-smollm2-cpu \\
        --candidate-facts index --examples 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import machine  # noqa: E402

WAYS = ("every position", "labelled positions")


def batch_of_examples(a: argparse.Namespace, store, tokenizer):
    """input ids, attention mask and target-only labels of ``a.examples`` sft examples."""
    import torch

    from stages.queries.reader import read_split
    from stages.sft.config import SFTConfig
    from stages.sft.stage import build_examples

    queries = store.resolve(a.queries_name, kind="queries")
    cfg = SFTConfig(candidate_facts=a.candidate_facts, named_facts=True, seed=0)
    train = read_split(queries, "train", limit=a.examples, seed=0, part="sft")
    examples = build_examples(train, store.input_of(queries, "graph"), cfg)
    texts, prompt_lengths = [], []
    for prompt, target in zip(examples["prompt"], examples["completion"], strict=True):
        messages = json.loads(prompt)
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        whole = [*messages, {"role": "assistant", "content": target}]
        texts.append(tokenizer.apply_chat_template(whole, tokenize=False))
        prompt_lengths.append(len(tokenizer(head, add_special_tokens=False)["input_ids"]))
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, n in enumerate(prompt_lengths):
        labels[row, :n] = -100
    return batch, labels, torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("workdir"))
    parser.add_argument("--queries-name", default="queries")
    parser.add_argument("--model", default="smollm2-135m", help="model artifact or folder")
    parser.add_argument("--candidate-facts", default="compact", help="the sft's prompt layout")
    parser.add_argument("--examples", type=int, default=2, help="sft examples in the batch")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after a warm-up)")
    a = parser.parse_args()

    import trl.trainer.utils as trl_utils
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from stages.core.store import ArtifactStore
    from stages.llm.generation import autocast, cpu_bf16_flags, load_model_folder
    from stages.llm.lm_head import score_label_positions_only
    from stages.llm.lora import lora_config
    from stages.llm.models import resolve_model
    from stages.sft.config import SFTConfig

    store = ArtifactStore(a.workdir)
    original = trl_utils._use_triton
    score_label_positions_only()
    patched = trl_utils._use_triton
    import torch

    model, tokenizer = load_model_folder(resolve_model(store, a.model)[1], torch.float32)
    batch, labels, _ = batch_of_examples(a, store, tokenizer)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer
    torch.manual_seed(0)
    model = get_peft_model(model, lora_config(SFTConfig()))
    model.train()
    n_labels = int((labels[:, 1:] != -100).sum())
    print(
        f"batch {tuple(batch['input_ids'].shape)}: {int(batch['attention_mask'].sum())} tokens, "
        f"{n_labels} with a label ({a.candidate_facts} prompts)",
        flush=True,
    )
    runs = [(p, w) for p in ("fp32", "bf16") for w in WAYS]
    seconds: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    results: dict[tuple[str, str], tuple[float, torch.Tensor]] = {}
    for r in range(a.rounds + 1):  # round 0 warms up
        for precision, way in runs:
            trl_utils._use_triton = patched if way == WAYS[1] else original
            model.zero_grad(set_to_none=True)
            torch.manual_seed(1)  # the same LoRA dropout masks
            started = time.perf_counter()
            with autocast(precision, "cpu"):
                out = model(**batch, labels=labels, fused_lm_head=True)
            loss = -out.log_probs.sum() / n_labels
            loss.backward()
            took = time.perf_counter() - started
            grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            results[(precision, way)] = (loss.item(), grads)
            if r:
                seconds[(precision, way)].append(took)
                print(f"round {r}: {precision}, {way}: {took:.2f} s", flush=True)
    trl_utils._use_triton = patched
    med = {k: statistics.median(v) for k, v in seconds.items()}
    flags = ", ".join(cpu_bf16_flags()) or "no bf16 flags"
    print(f"{machine()} ({flags}); torch threads {torch.get_num_threads()}")
    print(f"| forward + backward (median of {a.rounds}) | {WAYS[0]} | {WAYS[1]} | speed-up |")
    print("|---|---|---|---|")
    for p in ("fp32", "bf16"):
        every, only = med[(p, WAYS[0])], med[(p, WAYS[1])]
        print(f"| {p} | {every:.2f} s | {only:.2f} s | {every / only:.2f}x |")
    for way in WAYS:
        ratio = med[("fp32", way)] / med[("bf16", way)]
        print(f"bf16 against fp32, {way}: {ratio:.2f}x")
    for p in ("fp32", "bf16"):
        (l0, g0), (l1, g1) = results[(p, WAYS[0])], results[(p, WAYS[1])]
        print(
            f"{p}: loss {l0:.6f} vs {l1:.6f} (diff {abs(l0 - l1):.2e}); LoRA gradients: largest "
            f"difference {float((g0 - g1).abs().max()):.2e} of {g0.numel():,}"
        )


if __name__ == "__main__":
    main()
