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
from collections.abc import Sequence

import numpy as np
import torch

from stages.film_facts import normalise_title_str

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
