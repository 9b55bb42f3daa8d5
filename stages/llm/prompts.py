"""The one prompt renderer, shared by training, evaluation and the assistant.

A prompt is the chat messages for one query: a system prompt, then the request, optionally the
user's recent history, optionally the facts of the items the request names, the numbered
candidates ("Title (Year)", optionally with their facts) and the answer format: short reasoning
paragraphs separated by blank lines, then the chosen title(s) in `\\boxed{...}`, several
separated by ";".

Prompt options (the same three in `rerec sft`, `rerec train` and `rerec eval`; a policy records
them in `policy.json` and evaluation defaults to them):

- ``candidate_facts``: ``none`` (titles only), ``compact`` (only the relations the request
  names; genres for interest requests; see `shown_relations`), ``index`` (the compact facts
  turned around: after the titles, each value with the candidates that have it, "- Woody Allen:
  Bananas (1971), Annie Hall (1977)"), ``index-only`` (those index lines without the numbered
  list before them, ~1/3 fewer tokens; a candidate that none of them lists follows under
  "Other candidates:") or ``full`` (every stored fact: up to 3 values of each relation).
  ``True``/``False`` (older configs and policies) read as full/none.
- ``named_facts``: an "About the items mentioned" block with the facts of the items the request
  names (the reference film of a medium or misinformed request, with its true facts; the liked
  films of an interest request), with the relations the candidates show (the compact ones when
  ``candidate_facts`` is none).
- ``history``: the user's last N liked items, in requests other than interest ones (whose text
  already lists them).

A small model knows no films: with ``compact`` facts and ``named_facts`` an implicit request
("directed by the director of Jaws") can be answered from the prompt alone, and a 20-candidate
medium or misinformed request stays near 530 SmolLM2 tokens (titles alone: 380; ``full``
facts: 1,500).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BeforeValidator

from schemas.queries import FAMILIES

SYSTEM_PROMPT = (
    "You are a recommendation assistant. You read a user's request and a numbered list of "
    "candidate items, reason about which candidate fits the request, and recommend from the "
    "candidates only."
)

FactMode = Literal["none", "compact", "index", "index-only", "full"]
FACT_MODES: tuple[str, ...] = ("none", "compact", "index", "index-only", "full")
INDEX_MODES = frozenset({"index", "index-only"})
# Compact facts show only the relations a request's conditions name: a request names a genre or
# a decade only through a condition, so those appear exactly when asked for. Showing genre and
# decade always was measured too: +300 SmolLM2 tokens on the median 20-candidate ml-100k prompt
# (837 instead of 532 for medium requests), for facts the request does not ask about; the year
# is in every title anyway.
# An interest request names no relation; its compact facts are the genres, the one relation
# whose overlap with the liked items ranks the next liked item above chance on ml-100k (test
# split: expected hit@1 0.084 by genre overlap, against 0.05 at random; 0.066 by director,
# 0.064 by decade, 0.073 by cast, each costing as many tokens or more).
COMPACT_INTEREST = frozenset({"genre"})
# The index mode is for models that copy better than they search: once a completion has
# written what the request asks for ("directed by Woody Allen"), the titles that have it follow
# that value in the prompt, where an attention head that copies what came after an earlier
# match finds them; in compact mode the title comes before its facts, so the model would have
# to look backwards from a match.
# Index-only drops the numbered list that index prompts begin with: every title is in the index
# lines already (each under every value it has), so the list is ~1/3 of an index prompt's
# tokens (median 845 SmolLM2 tokens on 400 valid queries of ml-100k, 569 without it) that
# training and generation pay for on every example. At the demo's recipe (a 48 × 4 sft) it
# taught less, though: 0.270 on 100 valid queries against 0.370 with the list, the loss mostly in
# medium requests (README, "How the layout was chosen"); so it is an option, not a default.


def fact_mode(value: str | bool | None) -> str:
    """A ``candidate_facts`` value as one of FACT_MODES (``True``: full, ``False``/None: none,
    as older configs and `policy.json` files have it)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "full"
    if value in FACT_MODES:
        return str(value)
    raise ValueError(f"candidate_facts must be one of {', '.join(FACT_MODES)} (got {value!r})")


def _facts_option(value: Any) -> Any:
    return fact_mode(value) if isinstance(value, bool) else value


# The prompt options as config fields (sft, train and eval share their type and help text).
FactOption = Annotated[FactMode, BeforeValidator(_facts_option)]
CANDIDATE_FACTS_HELP = (
    "facts shown with the candidates: none, compact (after each candidate, only the relations "
    "the request names; genres for interest requests), index (the compact facts as value: "
    "candidates lists), index-only (those lists without the numbered candidates) or full "
    "(every stored fact); true/false read as full/none"
)
NAMED_FACTS_HELP = (
    "show the facts of the items the request names (a medium or misinformed request's "
    "reference item, with its true facts; an interest request's liked items)"
)
HISTORY_HELP = "the user's last N liked items, shown in requests other than interest ones"


PROMPT_OPTIONS = ("candidate_facts", "named_facts", "history")


def prompt_options(source: Any) -> dict[str, Any]:
    """The prompt options of a config (or a `policy.json` mapping), for `render_messages`:
    missing ones take their defaults, booleans for candidate facts read as full/none."""
    get = source.get if isinstance(source, Mapping) else lambda n, d=None: getattr(source, n, d)
    return {
        "candidate_facts": fact_mode(get("candidate_facts", None)),
        "named_facts": bool(get("named_facts", False)),
        "history": int(get("history", 0) or 0),
    }


def answer_instruction(k: int) -> str:
    if k == 1:
        what = "the exact title of the one candidate you recommend"
    else:
        what = f"the exact titles of the {k} candidates you recommend, best first, separated by ;"
    return (
        "Reason in short paragraphs separated by blank lines. Then end with "
        f"\\boxed{{...}} containing {what}."
    )


def shown_relations(query: Mapping[str, Any], mode: str) -> frozenset[str] | None:
    """The relations whose facts a prompt shows (None: all): compact shows the relations the
    request's conditions name; interest requests (no conditions) see COMPACT_INTEREST."""
    if mode == "full":
        return None
    if query.get("family") == "interest":
        return COMPACT_INTEREST
    return frozenset(
        c["relation"] for c in query.get("conditions") or [] if c and c.get("relation")
    )


def format_attributes(
    attributes: Iterable[Mapping[str, Any]], relations: frozenset[str] | None = None
) -> str:
    """'genre: Comedy, Drama; director: Woody Allen' from (relation, value) pairs in stored
    order, keeping only ``relations`` (None: all)."""
    groups: dict[str, list[str]] = {}
    for a in attributes or []:
        if relations is None or a["relation"] in relations:
            groups.setdefault(a["relation"], []).append(str(a["value"]))
    return "; ".join(f"{r}: {', '.join(v)}" for r, v in groups.items())


def candidate_index(
    titles: Sequence[str],
    attributes: Sequence[Iterable[Mapping[str, Any]]],
    relations: frozenset[str] | None,
) -> dict[str, dict[str, list[str]]]:
    """``relation -> value -> titles that have it``, values and relations in the order the
    candidates first show them (the content of the index layout)."""
    index: dict[str, dict[str, list[str]]] = {}
    for title, facts in zip(titles, attributes, strict=False):
        for a in facts or []:
            if relations is None or a["relation"] in relations:
                holders = index.setdefault(a["relation"], {}).setdefault(str(a["value"]), [])
                if title not in holders:
                    holders.append(title)
    return index


def index_block(relation: str, values: Mapping[str, Sequence[str]]) -> str:
    """'Candidates by director:' then '- value: title, title' per value."""
    lines = [f"- {value}: {', '.join(holders)}" for value, holders in values.items()]
    return "\n".join([f"Candidates by {relation}:", *lines])


def render_user_message(
    query: Mapping[str, Any],
    *,
    k: int = 1,
    candidate_facts: FactMode | bool = "none",
    named_facts: bool = False,
    history: int = 0,
) -> str:
    """The user turn for one query row of the `queries` artifact (see the module's options)."""
    mode = fact_mode(candidate_facts)
    relations = shown_relations(query, mode)
    parts = [str(query["text"]).strip()]
    titles: Sequence[str] = query.get("history_titles") or []
    if history > 0 and titles and query.get("family") != "interest":
        parts.append("Items I liked recently: " + "; ".join(titles[-history:]) + ".")
    if named_facts:
        lines = []
        for item in query.get("named_items") or []:
            facts = format_attributes(item["attributes"], relations)
            if facts:
                lines.append(f"- {item['title']} — {facts}")
        if lines:
            parts.append("\n".join(["About the items mentioned:", *lines]))
    candidates: Sequence[str] = query["candidate_titles"]
    attributes: Sequence[Any] = query.get("candidate_attributes") or []
    if mode != "index-only":
        lines = ["Candidates:"]
        for n, title in enumerate(candidates, start=1):
            line = f"{n}. {title}"
            if mode in ("compact", "full") and n - 1 < len(attributes):
                facts = format_attributes(attributes[n - 1], relations)
                if facts:
                    line += f" — {facts}"
            lines.append(line)
        parts.append("\n".join(lines))
    if mode in INDEX_MODES:
        index = candidate_index(candidates, attributes, relations)
        parts += [index_block(relation, values) for relation, values in index.items()]
        if mode == "index-only":  # a candidate that no index line lists would go unseen
            listed = {t for vs in index.values() for holders in vs.values() for t in holders}
            if others := [t for t in candidates if t not in listed]:
                parts.append("Other candidates: " + "; ".join(others))
    parts.append(answer_instruction(k))
    return "\n\n".join(parts)


def render_messages(
    query: Mapping[str, Any],
    *,
    k: int = 1,
    candidate_facts: FactMode | bool = "none",
    named_facts: bool = False,
    history: int = 0,
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, str]]:
    """Chat messages for a tokenizer's chat template."""
    return [
        {"role": "system", "content": system_prompt},
        {
            "role": "user",
            "content": render_user_message(
                query,
                k=k,
                candidate_facts=candidate_facts,
                named_facts=named_facts,
                history=history,
            ),
        },
    ]


# ------------------------------------------------------------------ prompt lengths
def prompt_lengths(conversations: Sequence[list[dict[str, str]]], tokenizer: Any) -> list[int]:
    """Tokens of each conversation as the model reads it: the tokenizer's chat template with
    the generation prompt (the template holds the special tokens)."""
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        for c in conversations
    ]
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def token_stats(families: Sequence[str], lengths: Sequence[int]) -> pl.DataFrame:
    """``family, n, median, max`` of prompt lengths per family (in FAMILIES order), then
    ``all``."""
    df = pl.DataFrame(
        {"family": list(families), "tokens": list(lengths)},
        schema={"family": pl.String, "tokens": pl.Int64},
    )
    order = {f: n for n, f in enumerate(FAMILIES)}

    def agg(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.group_by("family").agg(
            n=pl.len().cast(pl.Int64),
            median=pl.col("tokens").median().cast(pl.Float64),
            max=pl.col("tokens").max().cast(pl.Int64),
        )

    per = agg(df).sort(pl.col("family").replace_strict(order, default=len(order)), "family")
    return pl.concat([per, agg(df.with_columns(family=pl.lit("all")))]) if df.height else per


def prompt_token_stats(
    queries: pl.DataFrame | Iterable[Mapping[str, Any]], tokenizer: Any, **options: Any
) -> pl.DataFrame:
    """``family, n, median, max`` prompt tokens of ``queries`` rendered with ``options`` (those
    of `render_messages`)."""
    rows = queries.to_dicts() if isinstance(queries, pl.DataFrame) else list(queries)
    lengths = prompt_lengths([render_messages(q, **options) for q in rows], tokenizer)
    return token_stats([str(q.get("family")) for q in rows], lengths)


def token_stats_metrics(stats: pl.DataFrame) -> dict[str, dict[str, float]]:
    """The stats as a manifest metric: {family: {n, median, max}}."""
    return {
        r["family"]: {"n": r["n"], "median": r["median"], "max": r["max"]}
        for r in stats.iter_rows(named=True)
    }


def describe_token_stats(stats: pl.DataFrame) -> str:
    """One line: 'prompt tokens (median / max): simple 480 / 530, ..., all 490 / 610'."""
    cells = [f"{r['family']} {r['median']:.0f} / {r['max']}" for r in stats.iter_rows(named=True)]
    return "prompt tokens (median / max): " + ", ".join(cells)
