"""Supervised cold-start targets: answers written from the graph for training queries.

A small model that never writes `\\boxed{}` gives GRPO groups of equal rewards and nothing to
learn from; R1-style pipelines therefore start RL from a short supervised fine-tune. The
targets here are what a careful recommender would write, built from the graph's facts:

1. what the request asks for, restated (a medium request's reference item resolved to its
   value; a misinformed request's false premise corrected; an interest request's favourites
   summarised by the attributes they share);
2. the candidate that satisfies it, with the facts that show it;
3. a tempting wrong candidate ruled out by the fact that fails (the paragraph that RAAE
   penalises when a policy later recommends such an item);
4. ``\\boxed{Title (Year)}`` with the candidate's title as the prompt shows it.

With the index layout (`--candidate-facts index`), a lookup paragraph comes between 1 and 2:
the prompt's own index line for the wanted value that narrows the candidates most ("Candidates
by director:" then "- Woody Allen: Annie Hall (1977)"), so that the title the target names next
follows, in the target, the same text it follows in the prompt: a copy, which a small model does
far better than a search (`benchmarks/lookup_probe.py`, index-echo).

Paragraphs are separated by blank lines, as the prompt asks. Each query's phrasing is chosen by
a generator seeded with (seed, the query's position in query-id order), so the targets are a
function of the queries, the graph and the seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from stages.llm.prompts import (
    INDEX_MODES,
    candidate_index,
    fact_mode,
    index_block,
    shown_relations,
)

Facts = Mapping[int, Mapping[str, Sequence[str]]]  # item_id -> relation -> values

_HAS = {  # relation -> "the item {phrase}"
    "director": "was directed by {}",
    "writer": "was written by {}",
    "cast": "stars {}",
    "genre": "is in the genre {}",
    "language": "is in {}",
    "country": "was made in {}",
    "decade": "is from the {}",
    "author": "was written by {}",
    "publisher": "was published by {}",
}
_WANT = {  # relation -> "a film {phrase}"
    "director": "directed by {}",
    "writer": "written by {}",
    "cast": "starring {}",
    "genre": "in the genre {}",
    "language": "in {}",
    "country": "made in {}",
    "decade": "from the {}",
    "author": "by {}",
    "publisher": "published by {}",
}
# Relations an interest summary may use, most telling first (language and country are left
# out: nearly every MovieLens favourite is an English-language US film, which tells nothing).
_TASTE = ("director", "cast", "writer", "author", "publisher", "genre", "decade")

_ASK = (
    "The request asks for {noun} {want}.",
    "I need {noun} {want}.",
    "The user wants {noun} {want}.",
)
_FITS = (
    "{title} fits: it {facts}.",
    "{title} is a match, since it {facts}.",
    "Among the candidates, {title} {facts}, so it satisfies the request.",
)
_NOT = (
    "{title} {partial}, but it {fails}, so it does not fit.",
    "{title} looks tempting{because}, but it {fails}; I rule it out.",
    "Not {title}: it {fails}.",
)
_ANSWER = ("\\boxed{{{title}}}",)


def item_facts(graph_facts: pl.DataFrame, item_ids: Sequence[int]) -> dict[int, dict[str, list]]:
    """``item_id -> relation -> values`` (in attribute-id order) for the items asked for."""
    rows = (
        graph_facts.filter(pl.col("item_id").is_in(list(set(item_ids))))
        .sort("item_id", "attr_id")
        .select("item_id", "relation", "value")
        .iter_rows()
    )
    out: dict[int, dict[str, list]] = {}
    for item, relation, value in rows:
        out.setdefault(int(item), {}).setdefault(relation, []).append(value)
    return out


def _has(facts: Mapping[str, Sequence[str]], relation: str, value: str) -> bool:
    return value in facts.get(relation, ())


def _phrase(table: Mapping[str, str], relation: str, value: str) -> str:
    return table.get(relation, relation + " {}").format(value)


def _join(parts: Sequence[str]) -> str:
    parts = list(parts)
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _describe(facts: Mapping[str, Sequence[str]], relations: Sequence[str]) -> str:
    """'was directed by X and is from the 1990s' from the first value of each relation."""
    parts = [_phrase(_HAS, r, facts[r][0]) for r in relations if facts.get(r)]
    return _join(parts) if parts else "has no listed facts"


def _fail(facts: Mapping[str, Sequence[str]], relation: str, value: str) -> str:
    """Why an item fails 'relation = value': its own value, or that it has none."""
    own = [v for v in facts.get(relation, ()) if v != value]
    if own:
        return _phrase(_HAS, relation, _join(own[:2]))
    return "is not " + _phrase(_WANT, relation, value)


def conditions_wanted(conditions: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(relation, true value) of each condition the answer must satisfy."""
    return [(c["relation"], c["value"]) for c in conditions if c and c.get("relation")]


def _restate(q: Mapping[str, Any], rng: np.random.Generator, noun: str) -> str:
    conds = [c for c in q["conditions"] or [] if c]
    wants = [_phrase(_WANT, c["relation"], c["value"]) for c in conds]
    lead = []
    for c in conds:
        if c.get("via_title") and c.get("false_value"):
            false = _phrase(_HAS, c["relation"], c["false_value"])
            lead.append(
                f"The request says {c['via_title']} {false}, but it "
                f"{_phrase(_HAS, c['relation'], c['value'])}: the answer should follow the true "
                "fact, not the false one."
            )
        elif c.get("via_title"):
            lead.append(
                f"{c['via_title']} {_phrase(_HAS, c['relation'], c['value'])}, so the answer "
                f"should be {_phrase(_WANT, c['relation'], c['value'])} too."
            )
    ask = _ASK[int(rng.integers(len(_ASK)))].format(noun=f"a {noun}", want=_join(wants))
    return " ".join([*lead, ask])


def _shared_taste(history: Sequence[int], facts: Facts) -> list[tuple[str, str, int]]:
    """(relation, value, how many favourites have it) shared by at least two favourites."""
    counts: Counter[tuple[str, str]] = Counter()
    for item in history:
        for relation, values in facts.get(item, {}).items():
            for v in set(values):
                counts[(relation, v)] += 1
    rank = {r: n for n, r in enumerate(_TASTE)}
    shared = [(r, v, n) for (r, v), n in counts.items() if n >= 2 and r in rank]
    return sorted(shared, key=lambda t: (-t[2], rank[t[0]], t[1]))[:3]


# A lookup line helps when it narrows the choice to a few candidates; a genre shared by ten is
# a long line (up to ~150 tokens) that a model must copy and still choose from.
LOOKUP_MAX_HOLDERS = 4


def _lookup(q: Mapping[str, Any], wants: Sequence[tuple[str, str]], answer: str) -> str | None:
    """The prompt's index line (`stages.llm.prompts.index_block`) of the wanted value that lists
    the answer among the fewest candidates (ties: the first wanted), when it lists at most
    LOOKUP_MAX_HOLDERS; None otherwise. Only a line that lists the answer counts: the prompt
    shows a few values per relation, so a fact of the graph may be missing there."""
    index = candidate_index(
        q["candidate_titles"], q.get("candidate_attributes") or [], shown_relations(q, "index")
    )
    best: tuple[str, str, list[str]] | None = None
    for relation, value in wants:
        holders = index.get(relation, {}).get(value)
        if holders and answer in holders and (best is None or len(holders) < len(best[2])):
            best = (relation, value, holders)
    if best is None or len(best[2]) > LOOKUP_MAX_HOLDERS:
        return None
    relation, value, holders = best
    return index_block(relation, {value: holders})


def write_completion(
    q: Mapping[str, Any],
    facts: Facts,
    rng: np.random.Generator,
    noun: str = "film",
    layout: str = "compact",
) -> str:
    """The target answer for one query row of the `queries` artifact; ``layout`` is the
    prompt's candidate-facts mode (index and index-only add the lookup paragraph)."""
    pos = int(q["positive_index"])
    ids = [int(i) for i in q["candidate_item_ids"]]
    titles = list(q["candidate_titles"])
    pos_facts = facts.get(ids[pos], {})
    paragraphs = []
    if q["family"] == "interest":
        history = [int(i) for i in q["history_item_ids"] or []]
        shared = _shared_taste(history, facts)
        if shared:
            taste = _join([f"{_phrase(_WANT, r, v)} ({n} of {len(history)})" for r, v, n in shared])
            paragraphs.append(f"The recent favourites have this in common: {noun}s {taste}.")
        else:
            paragraphs.append("The recent favourites have little in common.")
        wants = [(r, v) for r, v, _ in shared]
    else:
        paragraphs.append(_restate(q, rng, noun))
        wants = conditions_wanted(q["conditions"] or [])
    met = [(r, v) for r, v in wants if _has(pos_facts, r, v)]
    if layout in INDEX_MODES:
        lookup = _lookup(q, met, titles[pos])
        if lookup:
            paragraphs.append(lookup)
    if met:
        shown = _join([_phrase(_HAS, r, v) for r, v in met])
    else:  # an interest answer sharing none of the favourites' common facts
        shown = _describe(pos_facts, ("genre", "decade"))
    form = _FITS[int(rng.integers(len(_FITS)))]
    paragraphs.append(form.format(title=titles[pos], facts=shown))
    interest = q["family"] == "interest"
    # an interest summary is a taste, not a requirement: a candidate is ruled out only by a
    # shared fact that the answer has and it lacks
    wrong = _tempting(q, ids, met if interest else wants, facts)
    if wrong is not None:
        n, relation, value = wrong
        w_facts = facts.get(ids[n], {})
        shared_ok = [(r, v) for r, v in (met if interest else wants) if _has(w_facts, r, v)]
        partial = _join([_phrase(_HAS, r, v) for r, v in shared_ok]) if shared_ok else ""
        form = _NOT[int(rng.integers(len(_NOT)))]
        if not partial and "{partial}" in form:
            form = _NOT[2]
        paragraphs.append(
            form.format(
                title=titles[n],
                partial=partial,
                because=f" (it {partial})" if partial else "",
                fails="is not " + _phrase(_WANT, relation, value)
                if interest
                else _fail(w_facts, relation, value),
            )
        )
    paragraphs.append(_ANSWER[0].format(title=titles[pos]))
    return "\n\n".join(paragraphs)


def _tempting(
    q: Mapping[str, Any], ids: Sequence[int], wants: Sequence[tuple[str, str]], facts: Facts
) -> tuple[int, str, str] | None:
    """The wrong candidate most worth ruling out, and the wanted fact it lacks: a misinformed
    request's trap (an item with the false value) first, else the negative that meets the
    most wanted facts (ties: the earlier candidate)."""
    pos = int(q["positive_index"])
    for c in q["conditions"] or []:
        if c and c.get("false_value"):
            for n, item in enumerate(ids):
                if n != pos and _has(facts.get(item, {}), c["relation"], c["false_value"]):
                    return n, c["relation"], c["value"]
    if not wants:
        return None
    best = None
    for n, item in enumerate(ids):
        if n == pos:
            continue
        f = facts.get(item, {})
        missing = [(r, v) for r, v in wants if not _has(f, r, v)]
        if not missing:
            continue  # satisfies everything we can state: not a clear wrong answer
        score = len(wants) - len(missing)
        if best is None or score > best[0]:
            best = (score, n, missing[0])
    if best is None:
        return None
    _, n, (relation, value) = best
    return n, relation, value


def write_completions(
    queries: pl.DataFrame,
    graph_facts: pl.DataFrame,
    seed: int,
    noun: str = "film",
    candidate_facts: str | bool | None = "compact",
) -> list[str]:
    """Targets for every row of ``queries`` (sorted by query id for the seeding), for prompts
    in the ``candidate_facts`` layout."""
    layout = fact_mode(candidate_facts)
    rows = queries.sort("query_id").to_dicts()
    needed = set()
    for q in rows:
        needed.update(q["candidate_item_ids"] or [])
        needed.update(q["history_item_ids"] or [])
    facts = item_facts(graph_facts, sorted(needed))
    by_id = {
        q["query_id"]: write_completion(q, facts, np.random.default_rng([seed, n]), noun, layout)
        for n, q in enumerate(rows)
    }
    return [by_id[qid] for qid in queries["query_id"]]
