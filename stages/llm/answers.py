"""Reading a completion's answer: the first `\\boxed{}`, its titles, and their resolution to
candidates (a number, an exact normalised title or alternate title, or a fuzzy match)."""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from rapidfuzz import fuzz, process

from stages.text.titles import normalise_title_str

_BOX = "\\boxed{"
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_NUMBER = re.compile(r"^\s*(?:#|no\.?\s*|candidate\s*)?(\d{1,3})\s*[.)]?\s*$", re.IGNORECASE)
_ANSWER_YEAR = re.compile(r"\s*[(\[]\s*(\d{4})\s*[)\]]\s*$")
# A leading list marker: "4.", "4)", "4:", "#4", "candidate 4:", "-", "*", "•" (not "12 Angry").
_MARKER = re.compile(
    r"^(?:(?:candidate\s*|no\.?\s*)?#?\s*\d{1,3}\s*[.):](?!\d)|#\s*\d{1,3}\s|[-*•·–—+>]+)\s*",
    re.IGNORECASE,
)
_EDGES = " \t\r\n'\"“”‘’„«»`*_•·.,;:!"  # quotes, emphasis, trailing punctuation
_AKA = re.compile(r"^(?:a\.?k\.?a\.?|aka)\s+", re.IGNORECASE)
# Parentheses of book titles that are not another title: "(Paperback)", "(Book 2)", ...
_BIBLIO = re.compile(
    r"\b(?:paperback|hardcover|hardback|mass market|edition|book club|audio|cassette|series"
    r"|vol|volume|book \d+|backlist|library|reprint|unabridged|abridged)\b"
)
_SUBTITLE = re.compile(r"(?:\s+or)?\s*:\s+|\s+[-–—]\s+")


def parse_boxed(completion: str) -> list[str] | None:
    """Titles in the first ``\\boxed{...}`` (braces may nest), split on ";"; None: no box."""
    if not isinstance(completion, str):
        return None
    start = completion.find(_BOX)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOX)
    while i < len(completion) and depth:
        ch = completion[i]
        depth += 1 if ch == "{" else -1 if ch == "}" else 0
        i += 1
    if depth:
        return None  # an unclosed box is not an answer
    inner = completion[start + len(_BOX) : i - 1]
    return [part.strip() for part in inner.split(";") if part.strip()]


def title_key(title: str) -> str:
    """Normalised title without a trailing year: case, accents, articles, punctuation folded."""
    return normalise_title_str(_YEAR.sub("", title))


def title_keys(titles: Sequence[str]) -> list[str]:
    return [title_key(t) for t in titles]


def _split_parentheticals(title: str) -> tuple[str, list[str]]:
    """'Thieves (Voleurs, Les)' -> ('Thieves', ['Voleurs, Les']): the trailing balanced groups,
    outermost only ('X (Harry Potter (Paperback))' -> ('X', ['Harry Potter (Paperback)']))."""
    groups: list[str] = []
    t = title.rstrip()
    while t.endswith(")"):
        depth, start = 0, -1
        for i in range(len(t) - 1, -1, -1):
            if t[i] == ")":
                depth += 1
            elif t[i] == "(":
                depth -= 1
                if depth == 0:
                    start = i
                    break
        if start < 0:
            break  # unbalanced: leave the title whole
        groups.append(t[start + 1 : -1])
        t = t[:start].rstrip()
    return t, groups[::-1]


@functools.lru_cache(maxsize=65536)
def _title_variants(title: str) -> tuple[tuple[str, int], ...]:
    """Normalised keys of one title (its year removed), each with a rank: 0 the whole title and
    the title without its trailing parentheses; 1 each alternate title in them ("Voleurs, Les" ->
    "les voleurs", "a.k.a." dropped, edition and series markers skipped); 2 the title before a
    subtitle ("Star Wars: Episode IV - A New Hope" -> "star wars"). A key keeps its lowest rank."""
    keys: dict[str, int] = {}

    def add(text: str, rank: int) -> None:
        key = normalise_title_str(text)
        if key and key not in keys:
            keys[key] = rank

    add(title, 0)
    main, groups = _split_parentheticals(title)
    add(main, 0)
    for group in groups:
        alternate = _AKA.sub("", group.strip())
        key = normalise_title_str(alternate)
        if len(key) >= 2 and not key.isdigit() and not _BIBLIO.search(key):
            add(alternate, 1)
    head = _SUBTITLE.split(main, maxsplit=1)
    if len(head) == 2 and len(key := normalise_title_str(head[0])) >= 3 and not key.isdigit():
        add(head[0], 2)
    return tuple(keys.items())


def _clean(text: str) -> str:
    return html.unescape(text).replace("**", "").strip(_EDGES)


def _split_year(text: str) -> tuple[int | None, str]:
    m = _ANSWER_YEAR.search(text)
    return (int(m.group(1)), text[: m.start()].strip(_EDGES)) if m else (None, text)


class _Answer(NamedTuple):
    number: int | None  # "3", "#3", "candidate 3": a candidate position, 1-based
    year: int | None
    keys: tuple[tuple[str, int], ...]  # normalised key, 0 title / 1 alternate / 2 before subtitle
    fuzzy: tuple[str, ...]  # keys tried by fuzzy matching


@functools.lru_cache(maxsize=65536)
def _parse_answer(answer: str) -> _Answer:
    """Quotes, markdown bold and a leading list marker stripped ("4. 'Heat' (1995)" -> "Heat",
    1995); the keys of the text with the marker come last, in case it is part of the title."""
    text = _clean(answer)
    m = _NUMBER.match(text)
    if m:
        return _Answer(int(m.group(1)), None, (), ())
    bare = _clean(_MARKER.sub("", text, count=1))
    year, rest = _split_year(bare)
    variants = _title_variants(rest)
    keys: dict[str, int] = {}
    for key, kind in variants:
        if kind < 2 or year is not None:  # dropping a subtitle needs the year to agree
            keys.setdefault(key, kind)
    if bare != text:
        for key, kind in _title_variants(_split_year(text)[1]):
            if kind < 2:
                keys.setdefault(key, kind)
    return _Answer(None, year, tuple(keys.items()), tuple(k for k, r in variants if r == 0))


@functools.lru_cache(maxsize=65536)
def _parse_candidate(title: str) -> tuple[int | None, tuple[tuple[str, int], ...]]:
    year, rest = _split_year(html.unescape(title).strip())
    return year, _title_variants(rest)


def _numbers(key: str) -> list[str]:
    return [t for t in key.split() if t.isdigit()]


@dataclass
class CandidateIndex:
    """How the answer strings of one query are resolved to its candidates.

    In order: a bare number is a candidate position; then an exact normalised key (whole title,
    title without its parentheses, each alternate title in them, or the title before a subtitle)
    of a candidate whose year is within ±1 of the answer's (when both give one), the nearest
    year first; then a fuzzy match (`fuzz.ratio` >= threshold) among the candidates whose year
    is within ±1, with the same numbers in both titles ("RoboCop" is not "Robocop 3")."""

    item_ids: list[int]
    keys: dict[str, list[tuple[int, int]]]  # normalised key -> [(rank, candidate position)]
    years: list[int | None]
    _fuzzy: dict[int | None, tuple[list[str], list[int]]] = field(default_factory=dict)

    @classmethod
    def build(cls, item_ids: Sequence[int], titles: Sequence[str]) -> CandidateIndex:
        keys: dict[str, list[tuple[int, int]]] = {}
        years: list[int | None] = []
        for pos, title in enumerate(titles):
            year, variants = _parse_candidate(title)
            years.append(year)
            for key, rank in variants:
                keys.setdefault(key, []).append((rank, pos))
        return cls(list(item_ids), keys, years)

    def _fuzzy_choices(self, year: int | None) -> tuple[list[str], list[int]]:
        """Keys (titles and alternates) of the candidates whose year fits, and their positions."""
        got = self._fuzzy.get(year)
        if got is None:
            choices: list[str] = []
            positions: list[int] = []
            for key, entries in self.keys.items():
                if len(key) < 3:
                    continue
                for rank, pos in entries:
                    y = self.years[pos]
                    if rank < 2 and (year is None or y is None or abs(year - y) <= 1):
                        choices.append(key)
                        positions.append(pos)
            got = self._fuzzy[year] = (choices, positions)
        return got

    def resolve(self, answer: str, threshold: float) -> int | None:
        """Candidate position of one answer string, or None."""
        parsed = _parse_answer(answer)
        if parsed.number is not None:
            n = parsed.number
            return n - 1 if 1 <= n <= len(self.item_ids) else None
        year = parsed.year
        for key, kind in parsed.keys:
            entries = self.keys.get(key)
            if not entries:
                continue
            best: tuple[int, int, int] | None = None
            for rank, pos in entries:
                y = self.years[pos]
                dated = year is not None and y is not None
                if dated and abs(year - y) > 1:
                    continue
                if rank == 2 and (
                    kind == 2  # both sides cut at a subtitle: too loose
                    or not (dated or (len(entries) == 1 and " " in key))
                ):
                    continue
                score = (abs(year - y) if dated else 0, rank, pos)
                if best is None or score < best:
                    best = score
            if best is not None:
                return best[2]
        choices, positions = self._fuzzy_choices(year)
        for key in parsed.fuzzy:
            for choice, _, i in process.extract(
                key, choices, scorer=fuzz.ratio, score_cutoff=threshold, limit=3
            ):
                if _numbers(choice) == _numbers(key):
                    return positions[i]
        return None
