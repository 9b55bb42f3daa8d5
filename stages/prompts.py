"""The one prompt renderer, shared by training, evaluation and the assistant.

A prompt is the chat messages for one query: a system prompt, then the request, optionally the
user's recent history, the numbered candidates ("Title (Year)", optionally with key facts) and
the answer format: short reasoning paragraphs separated by blank lines, then the chosen title(s)
in `\\boxed{...}`, several separated by ";".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SYSTEM_PROMPT = (
    "You are a recommendation assistant. You read a user's request and a numbered list of "
    "candidate items, reason about which candidate fits the request, and recommend from the "
    "candidates only."
)


def answer_instruction(k: int) -> str:
    if k == 1:
        what = "the exact title of the one candidate you recommend"
    else:
        what = f"the exact titles of the {k} candidates you recommend, best first, separated by ;"
    return (
        "Reason in short paragraphs separated by blank lines. Then end with "
        f"\\boxed{{...}} containing {what}."
    )


def render_user_message(
    query: Mapping[str, Any],
    *,
    k: int = 1,
    candidate_facts: bool = False,
    history: int = 0,
) -> str:
    """The user turn for one query row of the `queries` artifact."""
    parts = [str(query["text"]).strip()]
    titles: Sequence[str] = query.get("history_titles") or []
    if history > 0 and titles and query.get("family") != "interest":
        parts.append("Items I liked recently: " + "; ".join(titles[-history:]) + ".")
    lines = ["Candidates:"]
    facts: Sequence[str] = query.get("candidate_facts") or []
    for n, title in enumerate(query["candidate_titles"], start=1):
        line = f"{n}. {title}"
        if candidate_facts and n - 1 < len(facts) and facts[n - 1]:
            line += f" — {facts[n - 1]}"
        lines.append(line)
    parts.append("\n".join(lines))
    parts.append(answer_instruction(k))
    return "\n\n".join(parts)


def render_messages(
    query: Mapping[str, Any],
    *,
    k: int = 1,
    candidate_facts: bool = False,
    history: int = 0,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, str]]:
    """Chat messages for a tokenizer's chat template."""
    return [
        {"role": "system", "content": system_prompt},
        {
            "role": "user",
            "content": render_user_message(
                query, k=k, candidate_facts=candidate_facts, history=history
            ),
        },
    ]
