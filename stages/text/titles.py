"""Titles, one set of rules for every stage: the key two spellings of a title share (for
joining catalogues to Wikidata, resolving a boxed answer, finding a named film in a request)
and the form a prompt shows.

MovieLens moves a leading article to the end ("Usual Suspects, The (1995)"); both the key and
the display form put it back in front, from the one article list below.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import polars as pl

# Articles that catalogues move to the end ("Postino, Il", "Miserables, Les").
ARTICLES = (
    "the", "a", "an", "les", "la", "le", "l'", "il", "el", "lo", "los", "las", "i", "gli",
    "das", "die", "der", "den", "det", "de", "un", "une",
)  # fmt: skip
_ANY_ARTICLE = "|".join(ARTICLES)
_CAPITALISED_ARTICLE = "|".join(a.capitalize() for a in ARTICLES)


def normalise_title(title: pl.Expr) -> pl.Expr:
    """Lower case, accents stripped, a trailing ", The" moved to the front, '&' read as 'and',
    punctuation dropped, a leading English article dropped."""
    t = title.str.to_lowercase().str.normalize("NFKD").str.replace_all(r"\p{M}", "")
    t = t.str.strip_chars()
    t = t.str.replace(rf"^(.*?),\s*({_ANY_ARTICLE})$", "$2 $1")
    t = t.str.replace_all("&", " and ")
    t = t.str.replace_all(r"[^\p{L}\p{N}]+", " ").str.strip_chars()
    return t.str.replace(r"^(the|a|an) ", "")


_ARTICLE_AT_END = re.compile(rf"^(.*?),\s*({_ANY_ARTICLE})$")
_NON_ALNUM = re.compile(r"[\W_]+")
_LEADING_EN_ARTICLE = re.compile(r"^(the|a|an) ")


@functools.lru_cache(maxsize=65536)
def normalise_title_str(title: str) -> str:
    """`normalise_title` for one Python string (same steps; the reward's hot path, where a
    Polars expression per string would cost more than the whole reward)."""
    t = unicodedata.normalize("NFKD", title.lower())
    t = "".join(ch for ch in t if not unicodedata.category(ch).startswith("M")).strip()
    t = _ARTICLE_AT_END.sub(r"\2 \1", t)
    t = t.replace("&", " and ")
    t = _NON_ALNUM.sub(" ", t).strip()
    return _LEADING_EN_ARTICLE.sub("", t)


def split_title_year(title: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); titles without a year keep a null year."""
    year = title.str.extract(r"\((\d{4})\)\s*$").cast(pl.Int32, strict=False)
    return title.str.replace(r"\s*\(\d{4}\)\s*$", "").str.strip_chars(), year


def display_title(title: pl.Expr) -> pl.Expr:
    """'Usual Suspects, The' -> 'The Usual Suspects' (MovieLens moves articles to the end);
    an alternate title in parentheses stays where it is."""
    moved = title.str.replace(rf"^(.*?), ({_CAPITALISED_ARTICLE})(\s+\(.*\))?$", "$2 $1$3")
    return moved.str.replace(r"^(L') ", "$1")


def title_year(title: pl.Expr, year: pl.Expr) -> pl.Expr:
    """The title as a prompt shows it, with its year: 'The Usual Suspects (1995)'."""
    title = display_title(title)
    return (
        pl.when(year.is_null())
        .then(title)
        .otherwise(pl.format("{} ({})", title, year.cast(pl.String)))
    )
