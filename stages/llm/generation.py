"""Loading a policy (or a base model) and generating answers in batches, shared by `rerec eval`
and `rerec recommend`.

Batched generation sorts the prompts by length (so a batch pads little), pads on the left (a
decoder-only model continues from the last position), and restores the input order. Greedy by
default; vLLM when asked and installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

from stages.core.artifact import Artifact
from stages.core.devices import pick_device
from stages.core.errors import UserError
from stages.core.store import ArtifactStore
from stages.llm.answers import parse_boxed
from stages.llm.models import require_vllm, resolve_model
from stages.llm.saved import SavedBatches, fingerprint


@dataclass
class Generator:
    model: Any
    tokenizer: Any
    label: str  # what generates: the policy ref, or the model's name
    info: dict[str, Any] = field(default_factory=dict)  # policy.json, or {} for a base model
    device: str = "cpu"
    policy: Artifact | None = None
    model_artifact: Artifact | None = None
    precision: str = "fp32"  # resolved: fp32, or bf16 weights


# ---------------------------------------------------------------------------------------------
# precision

CPUINFO = Path("/proc/cpuinfo")
# CPU flags (Linux names) of native bf16 matrix arithmetic: AVX512-BF16 (Cooper Lake, Zen 4 and
# later), AMX (Sapphire Rapids and later). Without them torch emulates bf16, slower than fp32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: Path | None = None) -> list[str]:
    """The bf16 flags this CPU reports in /proc/cpuinfo (none where the file is missing)."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return [f for f in BF16_CPU_FLAGS if f in flags]


def resolve_precision(precision: str, device: str, *, cpuinfo: Path | None = None) -> str:
    """The precision of a run on ``device`` ("cpu" or "cuda", already resolved): fp32 or bf16.

    auto: bf16 on a CUDA device with bf16 and on a CPU with AVX512-BF16 or AMX, else fp32; the
    answer depends only on the machine. bf16 asked on a CPU without them still runs (torch
    emulates it) after a one-line warning; on a GPU without bf16 it is refused."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "fp32":
        return "fp32"
    if device == "cuda":
        from transformers.utils import is_torch_bf16_gpu_available

        supported = is_torch_bf16_gpu_available()
        if precision == "bf16" and not supported:
            raise UserError("--precision bf16: this GPU has no bf16 support; use fp32 or auto")
    else:
        supported = bool(cpu_bf16_flags(cpuinfo))
        if precision == "bf16" and not supported:
            print(
                "warning: --precision bf16: this CPU has neither AVX512-BF16 nor AMX; torch "
                "emulates bf16, which is likely slower than fp32",
                file=sys.stderr,
            )
    if precision == "auto":
        return "bf16" if supported else "fp32"
    return "bf16"


def autocast(precision: str, device: str) -> Any:
    """bf16 autocast for a bf16 run (matrix products in bf16, weights and reductions in fp32);
    a no-op for fp32."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")


def quiet_libraries() -> None:
    """Our progress bars and logs replace the libraries' own bars and deprecation chatter."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


def load_model_folder(path: str, dtype: torch.dtype):
    """A causal LM and its tokenizer (with a chat template and a pad token; left padding)."""
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load model {path}: {first}") from None
    if tokenizer.chat_template is None:
        raise UserError(f"model {path}: its tokenizer has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def load_generator(
    store: ArtifactStore,
    *,
    policy: str | None,
    model: str | None,
    device: str = "auto",
    precision: str = "auto",
) -> Generator:
    """A trained policy (adapter merged into its base model, or full weights) or a base model
    (a model artifact, a folder or a hub id).

    bf16 (`resolve_precision`) generates with bf16 weights: on CPU they decode about twice as
    fast as fp32 weights and faster than fp32 weights under autocast, which casts every weight
    again at every token. An adapter is merged in fp32 first, then the model is cast."""
    quiet_libraries()
    device = pick_device(device)
    precision = resolve_precision(precision, device)
    dtype = torch.bfloat16 if device == "cuda" and precision == "bf16" else torch.float32
    if policy is not None:
        art = store.resolve(policy)
        if art.manifest.kind != "policy":
            raise UserError(f"{art.ref} is a {art.manifest.kind} artifact, not a policy")
        info = json.loads(art.file("policy.json").read_text())
        model_dir = art.file("model")
        base_art = None
        if info["adapter"]:
            from peft import PeftModel

            base_art, base_path = resolve_model(store, info["base_model"])
            base, _ = load_model_folder(base_path, dtype)
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            net = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
        else:
            net, tokenizer = load_model_folder(str(model_dir), dtype)
        gen = Generator(net, tokenizer, art.ref, info, device, art, base_art)
    else:
        model_art, path = resolve_model(store, model or "smollm2-135m")
        net, tokenizer = load_model_folder(path, dtype)
        label = model_art.ref if model_art else path
        gen = Generator(net, tokenizer, label, {}, device, None, model_art)
    gen.precision = precision
    if precision == "bf16":
        gen.model.to(torch.bfloat16)
    gen.model.to(device).eval()
    return gen


class BoxStop(StoppingCriteria):
    """Ends each row of a batch at the token that closes its first ``\\boxed{...}`` (braces may
    nest: the same test as `parse_boxed`, so the answer the reward reads is complete); the
    other rows go on. A literal stop string cannot say this: "}" also closes inner braces and
    any brace before the box, and the title inside varies.

    Cheap per token: only a row whose newest token holds a "}" is decoded (from the prompt's
    end). ``lengths`` maps each row that stopped here to its generated token count; what
    generate puts after it is padding, not the model's output."""

    def __init__(self, tokenizer: Any, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length
        self.lengths: dict[int, int] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        n = input_ids.shape[1] - self.prompt_length
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if n <= 0:
            return done
        newest = self.tokenizer.batch_decode(input_ids[:, -1:].tolist())
        for row, piece in enumerate(newest):
            if row not in self.lengths and "}" in piece:
                ids = input_ids[row, self.prompt_length :].tolist()
                if parse_boxed(self.tokenizer.decode(ids, skip_special_tokens=True)) is not None:
                    self.lengths[row] = n
            done[row] = row in self.lengths
        return done

    def trim(self, row: int, ids: list[int]) -> list[int]:
        """Row ``row``'s generated ids without the padding after its box."""
        return ids[: self.lengths[row]] if row in self.lengths else ids


def generate(
    gen: Generator,
    conversations: list[list[dict[str, str]]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    seed: int = 0,
    on_batch: Any = None,
    stop_at_box: bool = True,
    saved: SavedBatches | None = None,
) -> tuple[list[str], list[int]]:
    """Completions (text, token count) of each conversation, in input order. With
    ``stop_at_box`` each ends at the token that closes its first box (`BoxStop`).

    The batches are the prompts sorted by length (longest first, ties in input order), cut
    every ``batch_size``; batch n samples from its own seed (`batch_seed`). So each batch's
    answers depend on its own prompts only, and with ``saved`` finished batches are saved as
    they finish and saved ones are taken instead of generated (an interrupted eval resumes
    and writes what an unbroken one writes). ``on_batch(n)`` after each batch, saved ones
    included."""
    tok = gen.tokenizer
    prompts = [
        tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        for c in conversations
    ]
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    texts: list[str] = [""] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    sample = temperature > 0
    if saved is not None:
        saved.open(
            fingerprint(
                prompts,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
                stop_at_box=stop_at_box,
                device=str(gen.device),
                precision=gen.precision,
            )
        )
    for number, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start : start + batch_size]
        done = saved.get(number, idx) if saved is not None else None
        if done is not None:
            for i, text, count in zip(idx, *done, strict=True):
                texts[i], counts[i] = text, count
            if on_batch is not None:
                on_batch(len(idx))
            continue
        torch.manual_seed(batch_seed(seed, number))
        batch = tok(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(gen.device)
        prompt_length = batch["input_ids"].shape[1]
        stop = BoxStop(tok, prompt_length) if stop_at_box else None
        with torch.inference_mode():
            out = gen.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
                stopping_criteria=StoppingCriteriaList([stop]) if stop else None,
            )
        new = out[:, prompt_length:]
        for r, (row, i) in enumerate(zip(new.tolist(), idx, strict=True)):
            if stop is not None and r in stop.lengths:
                ids = stop.trim(r, row)
            else:
                ids = [t for t in row if t != tok.pad_token_id]
                if tok.eos_token_id in ids:
                    ids = ids[: ids.index(tok.eos_token_id) + 1]
            texts[i] = tok.decode(ids, skip_special_tokens=True)
            counts[i] = len(ids)
        if saved is not None:
            saved.put(number, idx, [texts[i] for i in idx], [counts[i] for i in idx])
        if on_batch is not None:
            on_batch(len(idx))
    return texts, counts


def batch_seed(seed: int, batch: int) -> int:
    """The torch seed of batch ``batch`` of a generation seeded ``seed``: its own stream, so a
    batch samples the same whether the batches before it ran or were resumed from disk."""
    digest = hashlib.sha256(f"{seed}/{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@contextlib.contextmanager
def merged_folder(gen: Generator) -> Iterator[str]:
    """The generator's weights (adapter merged) as a temporary transformers folder."""
    with tempfile.TemporaryDirectory(prefix="rerec-merged-") as tmp:
        gen.model.save_pretrained(tmp)
        gen.tokenizer.save_pretrained(tmp)
        yield tmp


def generate_vllm(
    gen_path: str,
    conversations: list[list[dict[str, str]]],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> tuple[list[str], list[int]]:
    """The same with vLLM (the `gpu` extra), from a merged model folder."""
    require_vllm()
    from vllm import LLM, SamplingParams  # pragma: no cover - GPU only

    llm = LLM(model=gen_path, seed=seed)  # pragma: no cover
    params = SamplingParams(temperature=temperature, max_tokens=max_new_tokens)  # pragma: no cover
    outs = llm.chat(conversations, params)  # pragma: no cover
    return (
        [o.outputs[0].text for o in outs],
        [len(o.outputs[0].token_ids) for o in outs],
    )  # pragma: no cover
