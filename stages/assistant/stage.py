"""`rerec recommend`: the assistant for open-ended requests, over the whole catalogue.

1. Retrieval from the graph: attribute values named in the request (normalised exact match on
   word boundaries, plus rapidfuzz partial matching ≥ 90 for long names, which forgives typos)
   and catalogue titles named in it (a named film brings its people along, as in "films with
   the lead of *Cast Away*"; the named film itself is not recommended). Items score by the
   rarity-weighted attributes they match, popularity breaking ties. With `--user`, the user's
   LightGCN top items (not yet rated) join, and the user's recent likes go into the prompt.
2. The LLM (a trained policy or a base model) reads the numbered candidates with their key
   facts, reasons and answers in `\\boxed{}`; answers resolve to candidates only, so every
   recommendation is a catalogue item. When the answer names no candidate, the retrieval's best
   are shown, flagged as such.
3. Each recommendation comes with its evidence: the request's attributes it matches.

A chat keeps the conversation: a later turn refines the request (its words are added to the
retrieval), and the model sees the earlier turns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from stages.core.artifact import Artifact
from stages.core.errors import UserError
from stages.graph.view import GraphView, item_attributes
from stages.llm.answers import CandidateIndex, parse_boxed
from stages.llm.prompts import SYSTEM_PROMPT, fact_mode, format_attributes, render_user_message
from stages.text.titles import normalise_title_str, title_year

# Relations a named reference item passes on to the retrieval (its people, not its genre).
PEOPLE = ("director", "cast", "writer", "author", "publisher", "composer", "producer")
STOP_VALUES = {"the", "a", "an", "and", "film", "films", "movie", "movies", "book", "books"}


@dataclass
class Match:
    attr_id: int
    relation: str
    value: str
    weight: float
    via: str | None = None  # the title that brought it, when it came through a named item


@dataclass
class Recommendation:
    item_id: int
    title: str
    evidence: list[str]


@dataclass
class Answer:
    request: str
    candidates: list[dict[str, Any]]  # item_id, title, facts, score, evidence
    completion: str
    reasoning: str
    recommendations: list[Recommendation]
    from_model: bool  # False: the model named no candidate; the retrieval's best are shown
    matches: list[Match] = field(default_factory=list)


RELATION_HINTS = {
    "director": ("direct",),
    "cast": ("star", "actor", "actress", "lead", "cast", "playing", "plays"),
    "writer": ("writ", "screenplay", "script"),
    "author": ("author", "writ", "novel"),
    "publisher": ("publish",),
}


def prefer_hinted_relations(matches: list[Match], request: str) -> list[Match]:
    """When a value matches under several relations and the request says which one it means
    ("directed by", "starring"), keep that one."""
    text = request.lower()
    hinted = {r for r, words in RELATION_HINTS.items() if any(w in text for w in words)}
    by_value: dict[str, list[Match]] = {}
    for m in matches:
        by_value.setdefault(normalise_title_str(m.value), []).append(m)
    kept = []
    for group in by_value.values():
        chosen = [m for m in group if m.relation in hinted] if len(group) > 1 else group
        kept += chosen or group
    return kept


class Catalogue:
    """The graph's items, attributes and facts, indexed for retrieval."""

    def __init__(self, graph: Artifact, cf: Artifact | None = None):
        g = GraphView(graph)
        self.graph = g
        self.domain = g.domain
        titles = g.items.select("item_id", title=title_year(pl.col("title"), pl.col("year")))
        self.titles = dict(titles.iter_rows())
        self.attributes: dict[int, list[dict[str, str]]] = dict(item_attributes(g).iter_rows())
        self.popularity = dict(g.popularity.select("item_id", "pop").iter_rows())
        attrs = g.attributes.filter(pl.col("item_count") > 0)
        n = max(g.n_items, 1)
        self.attr_rows = [
            (int(a), str(r), str(v), normalise_title_str(str(v)), 1.0 + math.log(n / max(c, 1)))
            for a, r, v, c in attrs.select("attr_id", "relation", "value", "item_count").iter_rows()
        ]
        self.attr_rows = [r for r in self.attr_rows if len(r[3]) >= 3 and r[3] not in STOP_VALUES]
        self.long_keys = [r[3] for r in self.attr_rows]
        edges = g.item_attributes
        self.item_attrs: dict[int, set[int]] = {
            int(i): set(a) for i, a in edges.group_by("item_id").agg("attr_id").iter_rows()
        }
        self.items_of: dict[int, list[int]] = {
            int(a): list(i) for a, i in edges.group_by("attr_id").agg("item_id").iter_rows()
        }
        keyed = [
            (normalise_title_str(str(t)), int(i))
            for i, t in g.items.select("item_id", "title").iter_rows()
        ]
        self.title_keys = {k: i for k, i in keyed if len(k) >= 4 and len(k.split()) >= 1}
        self.cf = cf
        self._user_emb: dict[int, np.ndarray] | None = None

    def match(self, request: str) -> tuple[list[Match], list[int]]:
        """Attributes and catalogue items the request names."""
        text = f" {normalise_title_str(request)} "
        found: dict[int, Match] = {}
        for attr_id, rel, value, key, w in self.attr_rows:
            if f" {key} " in text:
                found[attr_id] = Match(attr_id, rel, value, w)
        for _key, score, pos in process.extract(
            text, self.long_keys, scorer=fuzz.partial_ratio, score_cutoff=90, limit=20
        ):
            attr_id, rel, value, k, w = self.attr_rows[pos]
            if len(k) >= 10 and attr_id not in found:
                found[attr_id] = Match(attr_id, rel, value, w * score / 100)
        named = [i for k, i in self.title_keys.items() if len(k) >= 6 and f" {k} " in text]
        by_id = {r[0]: r for r in self.attr_rows}
        for item in named:
            for attr_id in self.item_attrs.get(item, ()):
                row = by_id.get(attr_id)
                if row is not None and row[1] in PEOPLE and attr_id not in found:
                    found[attr_id] = Match(
                        attr_id, row[1], row[2], 0.5 * row[4], via=self.titles.get(item)
                    )
        # a value that is part of a longer matched value ("allen" in "woody allen") adds nothing
        keys = {a: normalise_title_str(m.value) for a, m in found.items()}
        for a, k in list(keys.items()):
            if any(k != o and f" {k} " in f" {o} " for o in keys.values()):
                found.pop(a, None)
        return list(found.values()), named

    def user_top(self, user: int, n: int) -> list[int]:
        if self.cf is None:
            raise UserError("--user needs LightGCN embeddings: run `rerec pretrain-cf`")
        users = self.cf.read("user_embeddings").filter(pl.col("user_id") == user)
        if users.height == 0:
            raise UserError(f"user {user} is not in {self.cf.ref} (no interactions)")
        items = self.cf.read("item_embeddings")
        scores = items["embedding"].to_numpy() @ users["embedding"].to_numpy()[0]
        seen = set(self.graph.interactions.filter(pl.col("user_id") == user)["item_id"].to_list())
        order = np.argsort(-scores, kind="stable")  # equal scores: lower item id first
        ids = items["item_id"].to_numpy()
        return [int(ids[j]) for j in order if int(ids[j]) not in seen][:n]

    def user_history(self, user: int, n: int = 5) -> list[str]:
        inter = self.graph.interactions.filter(pl.col("user_id") == user)
        liked = inter.sort(pl.col("timestamp").fill_null(0), maintain_order=True).tail(n)
        return [self.titles[i] for i in liked["item_id"].to_list() if i in self.titles]

    def retrieve(
        self, request: str, *, user: int | None = None, n: int = 20
    ) -> tuple[list[dict[str, Any]], list[Match]]:
        matches, named = self.match(request)
        matches = prefer_hinted_relations(matches, request)
        # One person can be cast, director and writer: a value counts once per item (its best
        # relation), so a film is not ranked up for matching the same name three times.
        groups: dict[str, list[Match]] = {}
        for m in matches:
            groups.setdefault(normalise_title_str(m.value), []).append(m)
        scores: dict[int, float] = {}
        for group in groups.values():
            best: dict[int, float] = {}
            for m in group:
                for item in self.items_of.get(m.attr_id, ()):
                    best[item] = max(best.get(item, 0.0), m.weight)
            for item, w in best.items():
                scores[item] = scores.get(item, 0.0) + w
        for item in named:
            scores.pop(item, None)
        ranked = sorted(scores, key=lambda i: (-scores[i], -self.popularity.get(i, 0), i))
        picked = ranked[:n]
        if user is not None:
            extra = [i for i in self.user_top(user, n) if i not in picked and i not in named]
            k_user = n // 4 if picked else n
            picked = picked[: n - min(k_user, len(extra))] + extra[:k_user]
        if not picked:
            pop = sorted(self.popularity, key=lambda i: (-self.popularity[i], i))
            picked = [i for i in pop if i not in named][:n]
        out = []
        for item in picked:
            evidence = [
                f"{m.relation}: {m.value}" + (f" (as in {m.via})" if m.via else "")
                for m in matches
                if m.attr_id in self.item_attrs.get(item, set())
            ]
            out.append(
                {
                    "item_id": item,
                    "title": self.titles.get(item, str(item)),
                    "attributes": self.attributes.get(item, []),
                    "facts": format_attributes(self.attributes.get(item, [])),
                    "score": scores.get(item, 0.0),
                    "evidence": evidence,
                }
            )
        return out, matches


class Assistant:
    """A conversation with the policy over the catalogue. Prompts use the policy's prompt
    options (`policy.json`), except that candidates always show facts (full ones when the
    policy was trained without): they come from retrieval, not from a query set."""

    def __init__(self, catalogue: Catalogue, generator: Any, *, k: int = 5, n_candidates: int = 20):
        self.catalogue, self.gen, self.k, self.n = catalogue, generator, k, n_candidates
        info = getattr(generator, "info", None) or {}
        mode = fact_mode(info.get("candidate_facts"))
        self.candidate_facts = "full" if mode == "none" else mode
        self.named_facts = bool(info.get("named_facts", False))
        self.turns: list[str] = []
        self.messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM_PROMPT}]

    def ask(
        self,
        request: str,
        *,
        user: int | None = None,
        max_new_tokens: int = 384,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Answer:
        from stages.llm.generation import generate

        if not request.strip():
            raise UserError("the request is empty")
        self.turns.append(request.strip())
        candidates, matches = self.catalogue.retrieve(" ".join(self.turns), user=user, n=self.n)
        named = self.catalogue.match(" ".join(self.turns))[1] if self.named_facts else []
        query = {
            "text": request.strip(),
            "family": "simple",
            # compact facts show the relations the request names
            "conditions": [{"relation": m.relation} for m in matches],
            "candidate_titles": [c["title"] for c in candidates],
            "candidate_attributes": [c["attributes"] for c in candidates],
            "named_items": [
                {
                    "title": self.catalogue.titles.get(i, str(i)),
                    "attributes": self.catalogue.attributes.get(i, []),
                }
                for i in named
            ],
            "history_titles": self.catalogue.user_history(user) if user is not None else [],
        }
        k = min(self.k, len(candidates))
        content = render_user_message(
            query,
            k=k,
            candidate_facts=self.candidate_facts,
            named_facts=self.named_facts,
            history=5 if user is not None else 0,
        )
        if len(self.turns) > 1:
            content = "(Refining my earlier request.)\n\n" + content
        self.messages.append({"role": "user", "content": content})
        texts, _ = generate(
            self.gen,
            [self.messages],
            batch_size=1,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
        )
        completion = texts[0]
        self.messages.append({"role": "assistant", "content": completion})
        index = CandidateIndex.build(
            [c["item_id"] for c in candidates], [c["title"] for c in candidates]
        )
        chosen: list[int] = []
        for answer in parse_boxed(completion) or []:
            pos = index.resolve(answer, 85.0)
            if pos is not None and pos not in chosen:
                chosen.append(pos)
        from_model = bool(chosen)
        if not chosen:
            chosen = list(range(k))
        recs = [
            Recommendation(
                candidates[p]["item_id"], candidates[p]["title"], candidates[p]["evidence"]
            )
            for p in chosen[:k]
        ]
        box = completion.find("\\boxed{")
        reasoning = (completion[:box] if box >= 0 else completion).strip()
        return Answer(request, candidates, completion, reasoning, recs, from_model, matches)
