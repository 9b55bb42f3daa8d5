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
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch


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
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    prompt_len = input_ids.size(1) - logits_to_keep
    if prompt_len < 2:
        return None
    key = torch.cat([input_ids[:, :prompt_len], attention_mask[:, :prompt_len]], dim=1)
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    if unique.size(0) == input_ids.size(0):
        return None
    prompt_ids, prompt_mask = unique[:, :prompt_len], unique[:, prompt_len:]
    inner = getattr(model, "module", model)  # a DDP-wrapped model keeps its config inside
    if torch.is_grad_enabled() and any(
        getattr(m, "gradient_checkpointing", False) for m in inner.modules()
    ):
        return None  # checkpointed layers run without a cache: nothing to share through
    config = getattr(inner, "config", None)
    cache = DynamicCache(config=config) if config is not None else DynamicCache()
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        return None  # sliding-window or linear-attention layers: not expanded this way
    no_labels = torch.full_like(prompt_ids[:, :-1], -100)
    with autocast():
        # the prompts but their last token: the KV cache (with its graph), no position scored
        model(
            input_ids=prompt_ids[:, :-1],
            attention_mask=prompt_mask[:, :-1],
            cache=cache,
            labels=no_labels,
            fused_lm_head=True,
        )
        if cache.get_seq_length() != prompt_len - 1:
            return None  # the model did not fill the cache (the caller runs the usual pass)
        cache.batch_select_indices(inverse)  # one copy of its prompt's cache per row
        # each row's last prompt token, then its completion: their log-probabilities
        rest = input_ids[:, prompt_len - 1 :]
        labels = rest.masked_fill(attention_mask[:, prompt_len - 1 :] == 0, -100)
        out = model(
            input_ids=rest,
            attention_mask=attention_mask,
            cache=cache,
            labels=labels,
            fused_lm_head=True,
        )
    logps = out.log_probs[:, -logits_to_keep:]
    entropies = out.entropy[:, -logits_to_keep:] if compute_entropy else None
    return logps, entropies
