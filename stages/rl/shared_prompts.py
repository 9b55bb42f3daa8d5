"""The loss's forward pass with each group's prompt computed once (`--share-prompts`).

GRPO scores G completions of the same prompt. TRL's loss runs the model on every
prompt + completion row, so a step of P prompts × G completions computes each prompt G times,
and with rerec's prompts (~900 SmolLM2 tokens of index facts before ~120 completion tokens)
that is most of a step's training compute. Here the rows of a forward chunk that share their
prompt (ids and mask) run it once, filling a KV cache with its gradient graph; the cache is
expanded to the rows (`index_select`, differentiable, so each prompt's gradient sums over its
completions, as the unshared pass gives it) and the completions run on it, starting from the
prompt's last token so that the first completion token has its prediction. Positions are
those of the full row (the cache's length plus the offset), the attention mask is the full
row's, and the log-probabilities come from TRL's fused LM head (only the completion's
positions are scored), so a row gets the log-probabilities and entropies of the unshared pass:
equal up to floating-point rounding without LoRA dropout (tested); with dropout the prompt's
dropout masks are shared by its completions and fewer random numbers are drawn, so a run
differs from an unshared one as two seeds do. Chunks it cannot share through (layers that
recompute under activation checkpointing and run without a cache, cache layers other than
plain ones) take TRL's pass.

It pays when a forward chunk holds several completions of one prompt: `--micro-batch` equal to
the completions per step (the default) puts all of them in one chunk.

The rollouts share their prompts the same way (`shared_prompt_cache`): `generate` is handed a
KV cache of each distinct prompt but its last token, computed once and copied to the G rows
that sample from it, instead of running the prompt G times. The cache is filled at the
positions generation gives a left-padded row (counted over its mask), so the rows decode as
from their own prompt pass.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch


def cache_keyword(model: Any) -> str:
    """The keyword ``model``'s forward (and so `generate`) takes a KV cache by: ``cache`` in
    newer transformers, ``past_key_values`` in older ones (5.17, the lowest rerec supports),
    whose models swallow a ``cache=`` unused. Read off the forward of the model inside any DDP
    or PEFT wrapper; one that names neither (``**kwargs`` only) gets this transformers' name."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return _keyword_of(type(inner))


@functools.cache
def _keyword_of(cls: type) -> str:
    from transformers.models.llama.modeling_llama import LlamaModel

    for forward in (cls.forward, LlamaModel.forward):  # the model's, else this transformers'
        params = inspect.signature(forward).parameters
        if "cache" in params or "past_key_values" in params:
            return "cache" if "cache" in params else "past_key_values"
    return "past_key_values"


def _unfilled(where: str, model: Any) -> None:
    warnings.warn(
        f"--share-prompts: the model did not fill the KV cache handed to it as "
        f"{cache_keyword(model)}= ({where}); those prompts run unshared",
        RuntimeWarning,
        stacklevel=3,
    )


def _plain_cache(model: Any) -> Any | None:
    """An empty DynamicCache for ``model``, or None when its layers are not plain ones (sliding
    window, linear attention: not expanded row by row this way)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = getattr(getattr(model, "module", model), "config", None)
    cache = DynamicCache(config=config) if config is not None else DynamicCache()
    return cache if all(type(layer) is DynamicLayer for layer in cache.layers) else None


def _distinct_prompts(
    ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The distinct (ids, mask) rows and each row's index among them; None when every row is
    distinct (nothing to share)."""
    unique, inverse = torch.unique(torch.cat([ids, mask], dim=1), dim=0, return_inverse=True)
    if unique.size(0) == ids.size(0):
        return None
    return unique[:, : ids.size(1)], unique[:, ids.size(1) :], inverse


def can_share_in_generate(kwargs: dict[str, Any]) -> bool:
    """Whether a `generate` call can take `shared_prompt_cache`'s cache: text inputs only (ids
    and mask), no cache of its own, one sequence per row (no beams, no extra return
    sequences, which would expand the rows but not the cache) and no prefill in chunks."""
    allowed = {"input_ids", "attention_mask", "generation_config", "stopping_criteria"}
    if set(kwargs) - allowed or "attention_mask" not in kwargs:
        return False
    config = kwargs.get("generation_config")
    return config is None or (
        getattr(config, "cache_implementation", None) is None
        and (getattr(config, "num_beams", 1) or 1) == 1
        and (getattr(config, "num_return_sequences", 1) or 1) == 1
        and getattr(config, "prefill_chunk_size", None) is None
    )


def shared_prompt_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    """For `generate`: a KV cache of each row's prompt but its last token, each distinct prompt
    run once (no gradient) and its cache copied to the rows that share it; None when no two
    rows share a prompt or the model does not fill a plain cache. ``generate(input_ids=...,
    attention_mask=..., cache=cache)`` (`cache_keyword`) then runs only the last prompt token and
    decodes. Positions are those `generate` gives a left-padded row (its mask's running count),
    so a row continues as from its own prompt pass."""
    if input_ids.size(1) < 2:
        return None
    distinct = _distinct_prompts(input_ids, attention_mask)
    cache = _plain_cache(model)
    if distinct is None or cache is None:
        return None
    ids, mask, inverse = distinct
    ids, mask = ids[:, :-1], mask[:, :-1]
    key = cache_keyword(model)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate
    with torch.no_grad():
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{key: cache},
            use_cache=True,
            logits_to_keep=1,
        )
    if cache.get_seq_length() != ids.size(1):
        _unfilled("rollouts", model)
        return None
    cache.batch_select_indices(inverse)
    return cache


def shared_prompt_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    autocast: Callable[[], AbstractContextManager[Any]],
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Per-token log-probabilities (and entropies) of the last ``logits_to_keep`` tokens of
    each row, as TRL's `_get_per_token_logps_and_entropies` computes them for one chunk; None
    when no two rows share a prompt (nothing to gain: the caller runs the usual pass).
    ``model`` has TRL's fused LM head (`add_fused_lm_head`)."""
    prompt_len = input_ids.size(1) - logits_to_keep
    if prompt_len < 2:
        return None
    distinct = _distinct_prompts(input_ids[:, :prompt_len], attention_mask[:, :prompt_len])
    if distinct is None:
        return None
    prompt_ids, prompt_mask, inverse = distinct
    inner = getattr(model, "module", model)  # a DDP-wrapped model keeps its layers inside
    if torch.is_grad_enabled() and any(
        getattr(m, "gradient_checkpointing", False) for m in inner.modules()
    ):
        return None  # checkpointed layers run without a cache: nothing to share through
    cache = _plain_cache(model)
    if cache is None:
        return None  # sliding-window or linear-attention layers: not expanded this way
    no_labels = torch.full_like(prompt_ids[:, :-1], -100)
    key = cache_keyword(model)
    with autocast():
        # the prompts but their last token: the KV cache (with its graph), no position scored
        model(
            input_ids=prompt_ids[:, :-1],
            attention_mask=prompt_mask[:, :-1],
            **{key: cache},
            labels=no_labels,
            fused_lm_head=True,
        )
        if cache.get_seq_length() != prompt_len - 1:
            _unfilled("loss", model)
            return None  # the caller runs the usual pass
        cache.batch_select_indices(inverse)  # one copy of its prompt's cache per row
        # each row's last prompt token, then its completion: their log-probabilities
        rest = input_ids[:, prompt_len - 1 :]
        labels = rest.masked_fill(attention_mask[:, prompt_len - 1 :] == 0, -100)
        out = model(
            input_ids=rest,
            attention_mask=attention_mask,
            **{key: cache},
            labels=labels,
            fused_lm_head=True,
        )
    logps = out.log_probs[:, -logits_to_keep:]
    entropies = out.entropy[:, -logits_to_keep:] if compute_entropy else None
    return logps, entropies
