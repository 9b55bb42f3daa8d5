"""CPU speed options: bf16 precision, generation that stops at the box, no reference pass at
beta 0. Tiny models only (tests/fixtures/tiny_llm.py, tests/fixtures/workdirs.py)."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.llm.answers import parse_boxed
from stages.llm.generation import BoxStop, Generator, generate, resolve_precision
from stages.llm.prompts import render_messages
from stages.rl.config import TrainConfig
from tests.fixtures.tiny_llm import warm_up
from tests.fixtures.workdirs import build_toy_workdir

TRAIN = dict(limit=4, prompts_per_step=2, num_generations=3, max_completion_length=48, steps=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine two
    threads wait on each other: building the toy model took 10x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[ArtifactStore, Path]:
    return build_toy_workdir(tmp_path_factory.mktemp("speed"))


@pytest.fixture(scope="module")
def talker(toy, tmp_path_factory) -> Path:
    """The toy model, warmed further to go on talking after its box (as SmolLM2 does)."""
    store, model = toy
    folder = tmp_path_factory.mktemp("talker") / "model"
    shutil.copytree(model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    queries = store.resolve("queries").read("queries").filter(pl.col("split") == "train")
    texts = []
    for q in queries.to_dicts():
        for title in q["candidate_titles"][:3]:
            messages = render_messages(q)
            answer = f"{title} fits.\n\n\\boxed{{{title}}}\n\nI think so. I think so. I think so."
            messages.append({"role": "assistant", "content": answer})
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    warm_up(folder, texts, steps=150)
    return folder


def closes_at_last_token(tokenizer, ids: list[int]) -> bool:
    """The box is complete with the last token and not before it."""

    def text(n: int) -> str:
        return tokenizer.decode(ids[:n], skip_special_tokens=True)

    return parse_boxed(text(len(ids))) is not None and parse_boxed(text(len(ids) - 1)) is None


# ---------------------------------------------------------------------------------------------
# precision


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n"
        f"processor\t: 1\nflags\t\t: fpu sse2 avx2 {flags}\n"
    )
    return path


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("avx512f avx512_bf16", "bf16"), ("amx_tile amx_bf16", "bf16"), ("avx512f", "fp32")],
)
def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16(tmp_path, flags, expected) -> None:
    assert resolve_precision("auto", "cpu", cpuinfo=cpuinfo(tmp_path, flags)) == expected
    assert resolve_precision("fp32", "cpu", cpuinfo=cpuinfo(tmp_path, flags)) == "fp32"
    assert resolve_precision("auto", "cpu", cpuinfo=tmp_path / "missing") == "fp32"


def test_bf16_on_a_cpu_without_bf16_runs_after_one_warning(tmp_path, capsys) -> None:
    assert resolve_precision("bf16", "cpu", cpuinfo=cpuinfo(tmp_path, "avx512f")) == "bf16"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --precision bf16:")
    assert resolve_precision("bf16", "cpu", cpuinfo=cpuinfo(tmp_path, "avx512_bf16")) == "bf16"
    assert capsys.readouterr().err == ""


def test_bf16_on_a_gpu_without_bf16_is_one_line(monkeypatch) -> None:
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_torch_bf16_gpu_available", lambda: False)
    with pytest.raises(UserError, match="no bf16 support"):
        resolve_precision("bf16", "cuda")
    assert resolve_precision("auto", "cuda") == "fp32"


def test_precision_is_an_option_of_train_and_eval(toy, monkeypatch) -> None:
    from tests.fixtures.cli import invoke

    store, _ = toy
    for command in ("train", "eval"):
        result = invoke(store.root, monkeypatch, command, "--precision", "fp16")
        assert result.exit_code == 2
        assert "precision" in result.stderr and len(result.stderr.strip().splitlines()) <= 3


# ---------------------------------------------------------------------------------------------
# stopping at the box


class Script(LogitsProcessor):
    """Forces each row to write its own text, token by token (then EOS)."""

    def __init__(self, rows: list[list[int]], start: int, eos: int):
        self.rows, self.start, self.eos = rows, start, eos

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, -1e9)
        for r, ids in enumerate(self.rows):
            forced[r, ids[step] if step < len(ids) else self.eos] = 0.0
        return forced


def test_each_row_stops_right_after_its_box_closes_and_the_others_go_on(toy) -> None:
    _, model_dir = toy
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = [
        "Film 1 fits.\n\n\\boxed{Film 1}\n\nI think so, and so on and on and on.",
        "A {braced} aside first.\n\n\\boxed{Film {2}} fits, and then more and more talk.",
        "No box at all, only talk that runs on and on, longer than the other rows, to its end.",
    ]
    scripts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    batch = tok(["Hello", "Hi there", "Hey"], return_tensors="pt", padding=True)
    start = batch["input_ids"].shape[1]
    stop = BoxStop(tok, start)
    out = model.generate(
        **batch,
        max_new_tokens=max(map(len, scripts)) + 4,
        do_sample=False,
        logits_processor=[Script(scripts, start, tok.eos_token_id)],
        stopping_criteria=[stop],
        pad_token_id=tok.pad_token_id,
    )
    rows = out[:, start:].tolist()
    got = [tok.decode(stop.trim(r, row), skip_special_tokens=True) for r, row in enumerate(rows)]
    # rows 0 and 1 end with the token that closes their box (the nested brace and the braces
    # before the box do not stop row 1); row 2 has no box and goes on to its EOS
    assert sorted(stop.lengths) == [0, 1]
    for r in (0, 1):
        assert closes_at_last_token(tok, stop.trim(r, rows[r]))
        assert texts[r].startswith(got[r])
    assert got[0].endswith("\\boxed{Film 1}") and "Film {2}}" in got[1]
    assert got[1].endswith("}") and got[1].count("}") == 3
    assert rows[2][: len(scripts[2])] == scripts[2]  # went on after rows 0 and 1 had stopped
    assert stop.lengths[0] < len(scripts[2]) and stop.lengths[1] < len(scripts[2])
    assert all(t == tok.pad_token_id for t in rows[0][stop.lengths[0] :])  # padding after it


def test_eval_generation_ends_at_the_box(toy, talker) -> None:
    store, _ = toy
    tok = AutoTokenizer.from_pretrained(talker)
    tok.padding_side = "left"
    gen = Generator(AutoModelForCausalLM.from_pretrained(talker).eval(), tok, "talker")
    queries = store.resolve("queries").read("queries").head(6).to_dicts()
    conversations = [render_messages(q) for q in queries]
    long, long_n = generate(gen, conversations, batch_size=3, max_new_tokens=80, stop_at_box=False)
    short, short_n = generate(gen, conversations, batch_size=3, max_new_tokens=80)
    boxed = [i for i, t in enumerate(long) if parse_boxed(t) is not None]
    assert len(boxed) >= 4, long  # the warmed model answers with a box
    for i in boxed:
        assert long[i].startswith(short[i]) and short_n[i] < long_n[i]
        assert parse_boxed(short[i]) == parse_boxed(long[i])
        assert short[i].rstrip().endswith("}") and "I think so" not in short[i]
    for i in set(range(len(long))) - set(boxed):
        assert short[i] == long[i] and short_n[i] == long_n[i]
    assert sum(short_n) < 0.8 * sum(long_n)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_rollouts_end_at_the_box_with_the_right_mask(
    toy, talker, tmp_path, precision
) -> None:
    from stages.rl.inputs import load_inputs
    from stages.rl.stage import make_trainer

    store, _ = toy
    cfg = TrainConfig(model=str(talker), precision=precision, **TRAIN)
    trainer, _ = make_trainer(cfg, load_inputs(store, cfg), tmp_path / "run", "cpu")
    trainer.model.train()
    out = trainer._generate_and_score_completions([trainer.rows[0]] * 6)
    assert (trainer._rollout is not None) == (precision == "bf16")  # the bf16 copy generated
    ids, mask = out["completion_ids"], out["completion_mask"]
    tok = trainer.processing_class
    stopped = 0
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        n = sum(m)
        assert m == [1] * n + [0] * (len(m) - n)  # the mask covers a prefix
        kept = row[:n]
        if closes_at_last_token(tok, kept):
            stopped += 1  # ends with the box: no EOS (nor padding) after it in the loss
        else:
            assert parse_boxed(tok.decode(kept, skip_special_tokens=True)) is None
            assert kept[-1] == tok.eos_token_id or n == TRAIN["max_completion_length"]
    assert stopped >= 3
    assert trainer.scorer.last["texts"] == [
        tok.decode(r[: sum(m)], skip_special_tokens=True)
        for r, m in zip(ids.tolist(), mask.tolist(), strict=True)
    ]


def test_bf16_rollout_copy_is_the_policy_with_its_adapter_merged(toy, tmp_path) -> None:
    from stages.rl.inputs import load_inputs
    from stages.rl.stage import make_trainer
    from stages.rl.trainer import bf16_rollout_model

    store, model = toy
    cfg = TrainConfig(model=str(model), precision="bf16", **TRAIN)
    policy = make_trainer(cfg, load_inputs(store, cfg), tmp_path / "run", "cpu")[0].model
    policy.eval()
    x = torch.randint(3, 300, (2, 40), generator=torch.Generator().manual_seed(0))

    def train_adapter(seed: int) -> None:  # as if trained: B is zero at initialisation
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)

    rollout = None
    for seed in (1, 2):  # the second time, the same copy is refreshed in place
        train_adapter(seed)
        with torch.no_grad():
            want = policy(x).logits
            with policy.disable_adapter():
                base = policy(x).logits
            copy = bf16_rollout_model(policy, rollout)
            got = copy(x).logits.float()
        assert rollout is None or copy is rollout
        rollout = copy
        assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
        assert (got - want).abs().max() < 0.1 * (base - want).abs().max()  # adapter merged
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            autocast = policy(x).logits.float()
        # bf16 rounding only: as far from fp32 as the policy under autocast (measured: mean
        # 0.017 against 0.019, max 0.39 against 0.24, where the adapter moves logits by 11.6)
        assert (got - want).abs().mean() < 2 * (autocast - want).abs().mean()


# ---------------------------------------------------------------------------------------------
# beta 0, bf16 training


def count_reference_passes(monkeypatch) -> list[int]:
    """Calls of TRL's reference path for a PEFT policy (the adapter disabled)."""
    import trl.trainer.grpo_trainer as grpo

    calls: list[int] = []
    original = grpo.use_adapter

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(grpo, "use_adapter", counted)
    return calls


@pytest.mark.parametrize(("beta", "passes"), [(0.0, 0), (0.01, 1)])
def test_beta_zero_makes_no_reference_pass(toy, tmp_path, monkeypatch, beta, passes) -> None:
    from stages.rl.inputs import load_inputs
    from stages.rl.stage import make_trainer

    store, model = toy
    calls = count_reference_passes(monkeypatch)
    cfg = TrainConfig(model=str(model), beta=beta, precision="fp32", **TRAIN)
    trainer, _ = make_trainer(cfg, load_inputs(store, cfg), tmp_path / "run", "cpu")
    assert trainer.ref_model is None  # LoRA: the reference is the disabled adapter
    trainer.model.train()
    out = trainer._generate_and_score_completions([trainer.rows[0]] * 6)
    assert len(calls) == passes
    assert ("ref_per_token_logps" in out) == (passes > 0)


def test_policy_and_eval_record_the_resolved_precision(toy) -> None:
    from stages.eval.config import EvalConfig
    from stages.eval.stage import evaluate
    from stages.rl.stage import train_policy

    store, model = toy
    cfg = TrainConfig(model=str(model), precision="bf16", beta=0.0, output="policy-bf16", **TRAIN)
    art = train_policy(store, cfg).artifact
    assert json.loads(art.file("policy.json").read_text())["precision"] == "bf16"
    assert art.manifest.metrics["precision"] == "bf16"
    assert art.manifest.config["precision"] == "bf16"
    ev = evaluate(
        store, EvalConfig(policy="policy-bf16", limit=2, bootstrap=0, precision="fp32")
    ).artifact
    assert ev.manifest.metrics["precision"] == "fp32"
    assert json.loads(ev.file("eval.json").read_text())["precision"] == "fp32"


def test_bf16_training_step_agrees_with_fp32(toy, tmp_path) -> None:
    """The same batch through the fp32 and the bf16 trainer: bf16 runs the loss's forward
    under autocast (bf16 matrix products) and gives the same loss, log-probabilities and
    gradient within bf16 tolerance."""
    from stages.rl.inputs import load_inputs
    from stages.rl.stage import make_trainer

    store, model = toy
    results = {}
    batch = None
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(model=str(model), precision=precision, beta=0.0, **TRAIN)
        trainer, _ = make_trainer(cfg, load_inputs(store, cfg), tmp_path / precision, "cpu")
        trainer.model.train()
        if batch is None:
            batch = trainer._generate_and_score_completions([trainer.rows[0]] * 6)
        dtypes: list[torch.dtype] = []
        layer = trainer.model.base_model.model.model.layers[0].mlp.down_proj
        hook = layer.register_forward_hook(lambda m, i, o, seen=dtypes: seen.append(o.dtype))
        trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
        torch.manual_seed(0)  # the same LoRA dropout masks
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        hook.remove()
        with torch.no_grad():
            logps, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model,
                torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
                torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
                batch["completion_ids"].shape[1],
            )
        grads = torch.cat(
            [p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]
        )
        trainable = [p for p in trainer.model.parameters() if p.requires_grad]
        results[precision] = (loss.item(), logps.detach(), grads, dtypes[0], trainable)
    (l32, lp32, g32, d32, _), (l16, lp16, g16, d16, w16) = results["fp32"], results["bf16"]
    assert d32 == torch.float32 and d16 == torch.bfloat16  # bf16 products really ran
    assert all(p.dtype == torch.float32 for p in w16)  # LoRA (master) weights stay fp32
    mask = batch["completion_mask"].bool()
    assert (lp32 - lp16)[mask].abs().max() < 0.1  # measured 0.07
    assert abs(l32 - l16) < 2e-2 * max(1.0, abs(l32))
    cos = torch.nn.functional.cosine_similarity(g32, g16, dim=0)
    assert cos > 0.99 and abs(g16.norm() / g32.norm() - 1) < 0.05  # measured 0.999, 1%


def test_the_fused_lm_head_scores_only_labelled_positions_on_a_cpu(toy, monkeypatch) -> None:
    """`score_label_positions_only` sends a CPU forward down TRL's label-positions path: the
    same log-probabilities, loss and LoRA gradients as scoring every position, with the prompt
    positions (no label) left out of the LM head."""
    import trl.trainer.utils as trl_utils
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from stages.llm.lm_head import score_label_positions_only
    from stages.llm.lora import lora_config

    store, model_dir = toy
    # this TRL still decides there (the patch's premise); a training test may have patched it
    original = getattr(trl_utils._use_triton, "original", trl_utils._use_triton)
    monkeypatch.setattr(trl_utils, "_use_triton", original)  # as TRL has it, for this test
    assert original(torch.device("cpu")) is False
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    model = get_peft_model(model, lora_config(TrainConfig(lora_dropout=0.0)))
    queries = store.resolve("queries").read("queries").head(3).to_dicts()
    texts = [tokenizer.apply_chat_template(render_messages(q), tokenize=False) for q in queries]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, : labels.shape[1] * 2 // 3] = -100  # a "prompt" with no labels

    scored: list[int] = []  # the positions each forward sends through the LM head

    def run() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(**batch, labels=labels, fused_lm_head=True)
        loss = -out.log_probs.sum() / (labels != -100).sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return out.log_probs.detach(), loss.detach(), grads

    real_chunked = trl_utils._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        scored.append(hidden.shape[0])
        return real_chunked(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting)
    every = run()
    assert score_label_positions_only() and score_label_positions_only()  # idempotent
    assert trl_utils._use_triton(torch.device("cpu")) is True
    only = run()
    shifted = labels[:, 1:]
    assert scored == [shifted.numel(), int((shifted != -100).sum())]
    assert torch.equal(every[0], only[0]) and torch.equal(every[1], only[1])
    assert len(every[2]) == len(only[2]) > 0
    for a, b in zip(every[2], only[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_shared_prompts_give_the_loss_of_the_unshared_pass(toy, tmp_path, monkeypatch) -> None:
    """`--share-prompts`: the same generated batch through the loss with each prompt run once
    (a KV cache expanded to its completions) and through TRL's pass: the same loss,
    log-probabilities and LoRA gradients up to rounding (no dropout, so no masks differ), and
    the shared path really ran (prompts of different lengths: left padding)."""
    import stages.rl.trainer as rl_trainer
    from stages.rl.inputs import load_inputs
    from stages.rl.stage import make_trainer

    store, model = toy
    shared_calls: list[int] = []
    real = rl_trainer.shared_prompt_logps

    def counted(*args, **kwargs):
        got = real(*args, **kwargs)
        shared_calls.append(got is not None)
        return got

    monkeypatch.setattr(rl_trainer, "shared_prompt_logps", counted)
    results, batch = {}, None
    for share in (False, True):
        cfg = TrainConfig(
            model=str(model), precision="fp32", beta=0.0, lora_dropout=0.0, share_prompts=share,
            **TRAIN,
        )  # fmt: skip
        trainer, _ = make_trainer(cfg, load_inputs(store, cfg), tmp_path / str(share), "cpu")
        trainer.model.train()
        with torch.no_grad():  # LoRA B starts at 0: move it, so the adapter takes part
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) / 20)
        if batch is None:  # the curriculum's 2 prompts × 3 completions, then reordered so
            # that groups interleave and one prompt keeps a single completion
            full = trainer._generate_and_score_completions([trainer.rows[0]] * 6)
            keep = torch.tensor([3, 0, 4, 5])
            batch = {
                k: v[keep] if isinstance(v, torch.Tensor) and v.dim() and v.size(0) == 6 else v
                for k, v in full.items()
            }
            assert torch.unique(batch["prompt_ids"], dim=0).size(0) == 2
            assert not torch.equal(batch["prompt_ids"][0], batch["prompt_ids"][1])
            assert batch["prompt_mask"].sum(dim=1).unique().numel() > 1  # left-padded
        trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
            batch["completion_ids"].shape[1],
            compute_entropy=True,
        )
        grads = torch.cat(
            [p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]
        )
        results[share] = (loss.item(), logps.detach(), grads, entropies.detach())
    assert shared_calls and all(shared_calls)  # the shared path ran, and only with the option
    (l0, lp0, g0, e0), (l1, lp1, g1, e1) = results[False], results[True]
    mask = batch["completion_mask"].bool()
    torch.testing.assert_close(lp1[mask], lp0[mask], rtol=0, atol=1e-4)
    torch.testing.assert_close(e1[mask], e0[mask], rtol=0, atol=1e-4)
    assert abs(l0 - l1) < 1e-5 * max(1.0, abs(l0))
    torch.testing.assert_close(g1, g0, rtol=1e-3, atol=1e-5 * float(g0.abs().max()))
    assert float(g0.abs().max()) > 0


def test_shared_prompt_cache_decodes_as_each_rows_own_prompt_pass(toy) -> None:
    """The rollouts' `--share-prompts`: `generate` handed one prompt pass per distinct prompt,
    copied to its rows (interleaved here, prompts of different lengths so one is left-padded),
    decodes what it decodes from every row's own pass: the same greedy tokens and the same
    scores up to rounding, and the same sampled tokens from the same seed."""
    from stages.rl.shared_prompts import cache_keyword, shared_prompt_cache

    store, folder = toy
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    queries = store.resolve("queries").read("queries").filter(pl.col("split") == "train")
    texts = [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in map(render_messages, queries.head(2).to_dicts())
    ]
    rows = [texts[0], texts[1], texts[0], texts[1], texts[1]]
    batch = tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
    assert batch["attention_mask"].sum(dim=1).unique().numel() == 2  # one prompt is padded
    for sample in (False, True):
        outs = []
        for shared in (False, True):
            cache = None
            if shared:
                cache = shared_prompt_cache(model, batch["input_ids"], batch["attention_mask"])
                assert cache.get_seq_length() == batch["input_ids"].size(1) - 1
            torch.manual_seed(7)
            outs.append(
                model.generate(
                    **batch,
                    **{cache_keyword(model): cache},
                    max_new_tokens=16,
                    do_sample=sample,
                    min_new_tokens=16,
                    output_scores=True,
                    return_dict_in_generate=True,
                    pad_token_id=tokenizer.pad_token_id,
                )  # fmt: skip
            )
        assert torch.equal(outs[0].sequences, outs[1].sequences)
        for a, b in zip(outs[0].scores, outs[1].scores, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    assert shared_prompt_cache(model, batch["input_ids"][:2], batch["attention_mask"][:2]) is None


def test_shared_prompts_say_when_the_model_swallows_the_cache(toy) -> None:
    """A model that takes the cache under another keyword (as transformers 5.17 did with
    ``cache=``) leaves it empty: sharing falls back to the unshared pass, and says so once,
    instead of silently (how a lent GPU found it). The keyword is read off the model's own
    forward, inside a PEFT wrapper too."""
    from peft import LoraConfig, get_peft_model

    from stages.rl.shared_prompts import cache_keyword, shared_prompt_cache

    _, folder = toy
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    key = cache_keyword(model)
    assert key in inspect.signature(type(model).forward).parameters
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert cache_keyword(lora) == key  # PeftModel's forward takes **kwargs: read the base's

    class Swallows(torch.nn.Module):  # forward(**kwargs): drops the cache it is handed
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, **kwargs):
            kwargs.pop(key, None)
            return self.inner(**kwargs)

    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    assert shared_prompt_cache(model, ids, mask).get_seq_length() == 3
    with pytest.warns(RuntimeWarning, match=f"did not fill the KV cache handed to it as {key}="):
        assert shared_prompt_cache(Swallows(model), ids, mask) is None


def test_shared_prompts_in_the_rollouts_of_a_training_step(toy, tmp_path, monkeypatch) -> None:
    """With `--share-prompts` a step's rollouts take the shared prompt pass: `generate` gets a
    cache of every prompt token but the last, built once per prompt (two prompts of different
    lengths) from the model that samples (the policy in fp32, the bf16 rollout copy in bf16),
    and samples the completions of the unshared run (fp32, the same seed; no LoRA dropout,
    which TRL leaves on while an fp32 policy generates, so that a shared prompt pass would
    draw other masks)."""
    import stages.rl.trainer as rl_trainer
    from stages.rl.inputs import load_inputs
    from stages.rl.shared_prompts import cache_keyword
    from stages.rl.stage import make_trainer

    store, model = toy
    built: list[tuple[Any, int]] = []  # (the model that ran the prompt pass, distinct prompts)
    real = rl_trainer.shared_prompt_cache

    def counted(net, ids, mask):
        got = real(net, ids, mask)
        built.append((net, torch.unique(ids, dim=0).size(0)))
        return got

    monkeypatch.setattr(rl_trainer, "shared_prompt_cache", counted)
    completions = {}
    for precision, share in (("fp32", False), ("fp32", True), ("bf16", True)):
        cfg = TrainConfig(
            model=str(model), precision=precision, beta=0.0, lora_dropout=0.0,
            share_prompts=share, **TRAIN,
        )  # fmt: skip
        trainer, _ = make_trainer(
            cfg, load_inputs(store, cfg), tmp_path / f"{precision}{share}", "cpu"
        )
        policy = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        handed: list[tuple[int, int | None]] = []  # (prompt width, cached length) per generate
        original = policy.generate if precision == "fp32" else None

        key = cache_keyword(policy)

        def spy(*a, _original=original, _handed=handed, _key=key, **kw):
            cache = kw.get(_key)
            _handed.append((kw["input_ids"].size(1), cache and cache.get_seq_length()))
            return _original(*a, **kw)

        if original is not None:
            policy.generate = spy  # what the trainer captures as the sampling model's generate
        torch.manual_seed(3)
        rows = [trainer.rows[0]] * 3 + [trainer.rows[1]] * 3
        out = trainer._generate_and_score_completions(rows)
        assert out["prompt_mask"].sum(dim=1).unique().numel() == 2  # one prompt is padded
        completions[precision, share] = out["completion_ids"]
        if precision == "fp32" and share:
            assert [(w, w - 1) for w, _ in handed] == handed and len(handed) == 1
        elif precision == "fp32":
            assert handed and all(cached is None for _, cached in handed)
        else:
            assert built[-1][0] is trainer._rollout  # the bf16 copy ran the prompt pass
    assert [n for _, n in built] == [2, 2]  # once per prompt, only in the shared runs
    assert torch.equal(completions["fp32", False], completions["fp32", True])


def test_shared_prompts_are_the_default_and_recorded_only_when_on() -> None:
    """On by default, and then in the config (so in the version id); off, the config is that of
    runs made before the option existed, which computed without it (their ids hold)."""
    from stages.core.manifest import config_dict

    assert config_dict(TrainConfig())["share_prompts"] is True
    off = config_dict(TrainConfig(share_prompts=False))
    assert "share_prompts" not in off
    assert off == {k: v for k, v in config_dict(TrainConfig()).items() if k != "share_prompts"}


@pytest.mark.filterwarnings("ignore")
def test_bench_train_gpu_smoke_mode_times_every_part(toy) -> None:
    """`benchmarks/bench_train_gpu.py --device cpu` (its smoke mode) on the toy workdir: it
    trains and says where the step went (the wrappers around TRL's methods saw each part)."""
    store, model = toy
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train_gpu.py"
    out = subprocess.run(
        [sys.executable, str(script),
         "--workdir", str(store.root), "--tokenizer", str(model), "--device", "cpu",
         "--layers", "1", "--hidden", "16", "--steps", "2", "--prompts-per-step", "1",
         "--generations", "2", "--max-completion-length", "8"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    assert "steps 2;" in out
    phases = re.search(r"per step \(medians\): (.*)", out).group(1)
    names = [part.split(" ")[0] for part in phases.split("; ")]
    assert names == ["rollouts", "rewards", "other", "loss", "backward", "optimizer"]
    rollouts = float(re.search(r"rollouts ([\d.]+) s", phases).group(1))
    assert rollouts > 0  # the wrapper saw the sampling
