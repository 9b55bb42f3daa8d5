"""Reasoning-Aware Advantage Estimation (RAAE): token-level rewards and advantages.

A completion is cut into reasoning segments (paragraphs on blank lines; a completion without
blank lines falls back to lines). When the recommendation is wrong, every segment that mentions
the wrongly recommended item failed to rule it out and gets a penalised reward; the segment
holding `\\boxed{}` and all others keep the completion's reward r. The penalty always lowers
the reward, whatever its sign:

    penalised(r) = r - w_penalty * max(|r|, min_penalty)

(the authors' release multiplies by 0.7, which *raises* a negative reward; `min_penalty` keeps a
zero reward from going unpenalised). Each token takes its segment's reward, and advantages are
normalised per token over all valid tokens of the group's G completions:
A_t = (r_t - mean) / (std + eps); `per_completion` normalisation instead uses the mean and std
of the G scalar rewards (plain GRPO's statistics) for every token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stages.text.titles import normalise_title_str

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_LINE_BREAK = re.compile(r"\n")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def segment_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) covering the whole text, one per segment; a separator
    belongs to the segment before it."""
    if not text:
        return [(0, 0)]
    breaks = list(_PARAGRAPH_BREAK.finditer(text))
    if not breaks:
        breaks = list(_LINE_BREAK.finditer(text))
    spans, start = [], 0
    for m in breaks:
        if m.end() >= len(text):
            break
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


def token_segments(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Segment index of each token, from the tokenizer's character offsets (a token belongs to
    the segment its first character is in)."""
    starts = np.array([s for s, _ in spans[1:]], dtype=np.int64)
    token_starts = np.array([s for s, _ in offsets], dtype=np.int64)
    return np.searchsorted(starts, token_starts, side="right")


def mentions(segment: str, title: str) -> bool:
    """Whether a segment names a title, with or without its year, ignoring case, accents and
    punctuation (matched on word boundaries of the normalised text)."""
    key = normalise_title_str(_YEAR.sub("", title))
    if not key:
        return False
    return f" {key} " in f" {normalise_title_str(segment)} "


def penalised(reward: float, w_penalty: float, min_penalty: float = 0.1) -> float:
    return reward - w_penalty * max(abs(reward), min_penalty)


def segment_rewards(
    text: str,
    reward: float,
    wrong_title: str | None,
    *,
    w_penalty: float = 0.3,
    min_penalty: float = 0.1,
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Spans and their rewards. ``wrong_title`` is the wrongly recommended title (None when the
    recommendation is right or absent: every segment keeps ``reward``)."""
    spans = segment_spans(text)
    rewards = np.full(len(spans), reward, dtype=np.float64)
    if wrong_title:
        for n, (a, b) in enumerate(spans):
            seg = text[a:b]
            if "\\boxed{" in seg:
                continue
            if mentions(seg, wrong_title):
                rewards[n] = penalised(reward, w_penalty, min_penalty)
    return spans, rewards


def token_rewards(
    text: str,
    offsets: Sequence[tuple[int, int]],
    reward: float,
    wrong_title: str | None,
    *,
    w_penalty: float = 0.3,
    min_penalty: float = 0.1,
) -> np.ndarray:
    spans, rewards = segment_rewards(
        text, reward, wrong_title, w_penalty=w_penalty, min_penalty=min_penalty
    )
    return rewards[token_segments(offsets, spans)]


def group_token_advantages(
    token_r: torch.Tensor,
    mask: torch.Tensor,
    group_sums: torch.Tensor,
    eps: float = 1e-4,
) -> torch.Tensor:
    """(r_t - mean) / (std + eps) with the group's pooled token statistics.

    ``group_sums`` (B, 3): for each local completion, its group's sum of token rewards, sum of
    squares and token count (summed over the G completions, on every process)."""
    s, ss, n = group_sums[:, 0], group_sums[:, 1], group_sums[:, 2].clamp(min=1)
    mean = s / n
    std = (ss / n - mean**2).clamp(min=0).sqrt()
    return (token_r - mean[:, None]) / (std[:, None] + eps) * mask


# ------------------------------------------------------------------ on token ids
def token_offsets(tokenizer: Any, ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Character span of each generated token in ``text`` (the decoded completion): token t
    starts where the decoded prefix ``ids[:t]`` stops agreeing with ``text``, and ends where
    the next one starts.

    Linear in the completion: tokens are decoded one by one, and where a character is split
    over several byte tokens, a short run of tokens is decoded together until it spells the
    text again. A tokenizer whose pieces do not concatenate (one that drops a leading space
    when a token is decoded alone) falls back to decoding every prefix, which is exact and
    quadratic."""
    if not ids:
        return []
    pieces = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    if "".join(pieces) == text:
        ends = np.cumsum([len(p) for p in pieces]).tolist()
        return list(zip([0, *ends[:-1]], ends, strict=True))
    starts = _starts_by_runs(tokenizer, ids, pieces, text)
    if starts is None:
        starts = [_agreeing(tokenizer.decode(list(ids[:t]), skip_special_tokens=True), text)
                  for t in range(len(ids))]  # fmt: skip
    return list(zip(starts, [*starts[1:], len(text)], strict=True))


_MAX_RUN = 8  # tokens of one character (UTF-8 needs at most 4 bytes)


def _agreeing(decoded: str, text: str, at: int = 0) -> int:
    """How many characters of ``decoded`` agree with ``text`` from position ``at`` on."""
    n, limit = 0, min(len(decoded), len(text) - at)
    while n < limit and decoded[n] == text[at + n]:
        n += 1
    return n


def _starts_by_runs(
    tokenizer: Any, ids: Sequence[int], pieces: list[str], text: str
) -> list[int] | None:
    """`token_offsets`' starts, decoding runs of tokens that split a character; None when the
    runs do not spell the text one after another (the caller decodes every prefix instead)."""
    starts: list[int] = []
    pos = 0  # text[:pos] is exactly the decoded tokens before the current run
    run: list[int] = []
    for t, token in enumerate(ids):
        if not run:
            starts.append(pos)
            decoded = pieces[t]
        else:
            partial = tokenizer.decode(run, skip_special_tokens=True)
            starts.append(pos + _agreeing(partial, text, pos))
            decoded = tokenizer.decode([*run, token], skip_special_tokens=True)
        run.append(token)
        if text.startswith(decoded, pos):
            pos += len(decoded)
            run = []
        elif len(run) >= _MAX_RUN:
            return None
    return starts if not run and pos == len(text) else None  # the runs spell the whole text


def wrong_title(parts: dict[str, Any], i: int) -> str | None:
    """The title of completion i's recommended candidate when it is not a ground truth."""
    pred = int(parts["pred"][i])
    if pred < 0 or parts["correct"][i]:
        return None
    q = parts["queries"][i]
    return q["candidate_titles"][list(q["candidate_item_ids"]).index(pred)]


def raae_advantages(
    tokenizer: Any,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    parts: dict[str, Any],
    rewards_all: torch.Tensor,
    *,
    gather: Callable[[torch.Tensor], torch.Tensor],
    start: int,
    num_generations: int,
    w_penalty: float,
    mode: str = "per-token",
) -> tuple[torch.Tensor, float]:
    """(B, T) RAAE advantages of this process's B completions, and the share of their tokens
    that were penalised. ``parts`` is this process's `score_batch` output (with texts and
    queries), ``rewards_all`` every process's rewards in global order, ``start`` the global
    index of this process's first completion, ``gather`` concatenates a tensor over processes."""
    mask = completion_mask.to(torch.float64).cpu()
    ntok = mask.sum(dim=1)
    B = completion_ids.shape[0]
    tok_r = torch.zeros_like(mask)
    penalised = 0
    for i in range(B):
        n = int(ntok[i])
        row = completion_ids[i, :n].tolist()
        text = tokenizer.decode(row, skip_special_tokens=True)
        r = float(parts["reward"][i])
        values = token_rewards(
            text,
            token_offsets(tokenizer, row, text),
            r,
            wrong_title(parts, i),
            w_penalty=w_penalty,
        )
        penalised += int((values != r).sum())
        tok_r[i, :n] = torch.as_tensor(values, dtype=torch.float64)
    groups = torch.arange(start, start + B) // num_generations
    if mode == "per-token":
        stats = torch.stack([(tok_r * mask).sum(1), (tok_r**2 * mask).sum(1), ntok], dim=1)
        device = completion_ids.device
        stats = gather(stats.to(device)).cpu().view(-1, num_generations, 3).sum(dim=1)
        sums = stats[groups]
    elif mode == "per-completion":  # the G scalar rewards' mean and std, for every token
        r = rewards_all.to(torch.float64).cpu().view(-1, num_generations)
        mean, var = r.mean(1), r.var(1, unbiased=False)
        sums = torch.stack([mean[groups], var[groups] + mean[groups] ** 2, torch.ones(B)], 1)
    else:
        raise ValueError(f"unknown advantage mode {mode!r}")
    share = penalised / max(float(ntok.sum()), 1.0)
    return group_token_advantages(tok_r, mask, sums), share
