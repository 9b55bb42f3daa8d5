"""Answer-title resolution (reward and eval): alternate titles, list markers, quotes, years and
fuzzy neighbours, pinned case by case and measured on a MovieLens-style catalogue."""

from __future__ import annotations

import random
import re

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.llm.answers import CandidateIndex
from stages.rewards.dual_graph import RewardIndex, RewardWeights, score_batch

# Real MovieLens titles (ml-100k, ml-1m, ml-latest spellings), decoys of the issue included.
CATALOGUE = [
    "Toy Story (1995)",
    "Usual Suspects, The (1995)",
    "Seven (Se7en) (1995)",
    "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    "Postino, Il (1994)",
    "Like Water For Chocolate (Como agua para chocolate) (1992)",
    "Thieves (Voleurs, Les) (1996)",
    "Third Man, The (1949)",
    "Rob Roy (1995)",
    "Cinderella (1950)",
    "Innocent, The (1994)",
    "Little Women (1994)",
    "Robocop 3 (1993)",
    "Father of the Bride (1950)",
    "Anna (1996)",
    "Germinal (1993)",
    "Shawshank Redemption, The (1994)",
    "Godfather, The (1972)",
    "Godfather: Part II, The (1974)",
    "Star Wars (1977)",
    "Empire Strikes Back, The (1980)",
    "Return of the Jedi (1983)",
    "Raiders of the Lost Ark (1981)",
    "Twelve Monkeys (1995)",
    "Babe (1995)",
    "Dead Man Walking (1995)",
    "Heat (1995)",
    "Sense and Sensibility (1995)",
    "Braveheart (1995)",
    "Apollo 13 (1995)",
    "Batman Forever (1995)",
    "Belle de jour (1967)",
    "Wings of Desire (Himmel über Berlin, Der) (1987)",
    "Cemetery Man (Dellamorte Dellamore) (1994)",
    "Shall We Dance? (Shall We Dansu?) (1996)",
    "Eat Drink Man Woman (1994)",
    "Farewell My Concubine (1993)",
    "Three Colors: Red (1994)",
    "Fargo (1996)",
    "Big Sleep, The (1946)",
    "Casablanca (1942)",
    "Manchurian Candidate, The (1962)",
    "Wizard of Oz, The (1939)",
    "Graduate, The (1967)",
    "2001: A Space Odyssey (1968)",
    "12 Angry Men (1957)",
    "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963)",
    "Monty Python and the Holy Grail (1975)",
    "Amelie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "Spirited Away (Sen to Chihiro no kamikakushi) (2001)",
    "Pan's Labyrinth (Laberinto del fauno, El) (2006)",
    "Lives of Others, The (Das leben der Anderen) (2006)",
    "Crouching Tiger, Hidden Dragon (Wo hu cang long) (2000)",
    "Seventh Seal, The (Sjunde inseglet, Det) (1957)",
    "Bicycle Thieves (a.k.a. The Bicycle Thief) (a.k.a. The Bicycle Thieves) "
    "(Ladri di biciclette) (1948)",
    "Grand Illusion (La grande illusion) (1937)",
    "Rules of the Game, The (La règle du jeu) (1939)",
    "Beauty and the Beast (1991)",
    "Lion King, The (1994)",
    "Aladdin (1992)",
    "Jurassic Park (1993)",
    "Terminator 2: Judgment Day (1991)",
    "Terminator, The (1984)",
    "Alien (1979)",
    "Aliens (1986)",
    "Hamlet (1996)",
    "Hamlet (1990)",
    "Henry V (1989)",
    "Much Ado About Nothing (1993)",
    "Secrets & Lies (1996)",
    "Trainspotting (1996)",
    "Leaving Las Vegas (1995)",
    "English Patient, The (1996)",
    "Jerry Maguire (1996)",
    "L.A. Confidential (1997)",
    "Good Will Hunting (1997)",
    "Titanic (1997)",
    "Boot, Das (1981)",
    "Cinema Paradiso (Nuovo cinema Paradiso) (1989)",
    "Princess Mononoke (Mononoke-hime) (1997)",
    "Mr. Holland's Opus (1995)",
    "*batteries not included (1987)",
    "Kids in the Hall: Brain Candy (1996)",
    "Nightmare Before Christmas, The (1993)",
    "Star Trek: First Contact (1996)",
    "Star Trek: The Wrath of Khan (1982)",
    "Mission: Impossible (1996)",
    "Sabrina (1995)",
    "Sabrina (1954)",
    "Shining, The (1980)",
]
IDS = list(range(100, 100 + len(CATALOGUE)))


@pytest.fixture(scope="module")
def catalogue() -> CandidateIndex:
    return CandidateIndex.build(IDS, CATALOGUE)


def resolved(index: CandidateIndex, answer: str) -> str | None:
    pos = index.resolve(answer, 85.0)
    return None if pos is None else CATALOGUE[pos]


# ------------------------------------------------------------------ the misses
@pytest.mark.parametrize(
    ("answer", "want"),
    [
        (
            "Like Water for Chocolate (1992)",
            "Like Water For Chocolate (Como agua para chocolate) (1992)",
        ),
        (
            "Como agua para chocolate (1992)",
            "Like Water For Chocolate (Como agua para chocolate) (1992)",
        ),
        ("Thieves (1996)", "Thieves (Voleurs, Les) (1996)"),
        ("Les Voleurs (1996)", "Thieves (Voleurs, Les) (1996)"),
        ("Voleurs, Les (1996)", "Thieves (Voleurs, Les) (1996)"),
        ("Thieves (Les Voleurs) (1996)", "Thieves (Voleurs, Les) (1996)"),
        ("Se7en (1995)", "Seven (Se7en) (1995)"),
        ("Seven (1995)", "Seven (Se7en) (1995)"),
        (
            "The City of Lost Children (1995)",
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
        ),
        (
            "La Cité des enfants perdus (1995)",
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
        ),
        ("Il Postino (1994)", "Postino, Il (1994)"),
        ("The Bicycle Thief (1948)", CATALOGUE[54]),
        ("Ladri di biciclette (1948)", CATALOGUE[54]),
        ("Le Fabuleux Destin d'Amélie Poulain (2001)", CATALOGUE[48]),
        ("Der Himmel über Berlin (1987)", "Wings of Desire (Himmel über Berlin, Der) (1987)"),
    ],
)
def test_alternate_titles_resolve_to_the_catalogue_film(catalogue, answer, want) -> None:
    assert resolved(catalogue, answer) == want


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ("4. The Third Man (1949)", "Third Man, The (1949)"),
        ("4) The Third Man (1949)", "Third Man, The (1949)"),
        ("#4 The Third Man (1949)", "Third Man, The (1949)"),
        ("- Rob Roy (1995)", "Rob Roy (1995)"),
        ("* Rob Roy (1995)", "Rob Roy (1995)"),
        ("• Rob Roy (1995)", "Rob Roy (1995)"),
        ("'Cinderella' (1950)", "Cinderella (1950)"),
        ("'Cinderella (1950)'", "Cinderella (1950)"),
        ('"Cinderella (1950)"', "Cinderella (1950)"),
        ("“Cinderella” (1950)", "Cinderella (1950)"),
        ("‘Cinderella’ (1950)", "Cinderella (1950)"),
        ("**Cinderella (1950)**", "Cinderella (1950)"),
        ("1. **Heat** (1995).", "Heat (1995)"),
        ("2. 12 Angry Men (1957)", "12 Angry Men (1957)"),
        ("12 Angry Men (1957)", "12 Angry Men (1957)"),
        ("2001: A Space Odyssey (1968)", "2001: A Space Odyssey (1968)"),
        ("*batteries not included (1987)", "*batteries not included (1987)"),
    ],
)
def test_list_markers_and_quotes_are_stripped(catalogue, answer, want) -> None:
    assert resolved(catalogue, answer) == want


@pytest.mark.parametrize(
    ("answer", "want"), [("3", 2), ("#3", 2), ("candidate 3", 2), ("3.", 2), ("**3**", 2)]
)
def test_a_bare_number_is_a_candidate_position(catalogue, answer, want) -> None:
    assert catalogue.resolve(answer, 85.0) == want
    assert catalogue.resolve("999", 85.0) is None


@pytest.mark.parametrize(
    ("answer", "decoy"),
    [
        ("The Innocent (2004)", "Innocent, The (1994)"),
        ("Little Women (1949)", "Little Women (1994)"),
        ("RoboCop (1987)", "Robocop 3 (1993)"),
        ("Mother of the Bride (1993)", "Father of the Bride (1950)"),
        ("Hanna (2011)", "Anna (1996)"),
        ("Terminal, The (2004)", "Germinal (1993)"),
    ],
)
def test_films_not_in_the_catalogue_are_not_credited_to_a_neighbour(answer, decoy) -> None:
    assert decoy in CATALOGUE
    index = CandidateIndex.build(IDS, CATALOGUE)
    assert resolved(index, answer) is None
    # The decoy alone among unrelated candidates is not credited either.
    alone = CandidateIndex.build([1, 2, 3], ["Heat (1995)", decoy, "Fargo (1996)"])
    assert alone.resolve(answer, 85.0) is None


def test_a_year_within_one_of_the_catalogue_year_still_matches(catalogue) -> None:
    assert resolved(catalogue, "The Innocent (1995)") == "Innocent, The (1994)"
    assert resolved(catalogue, "Little Women (1993)") == "Little Women (1994)"
    assert resolved(catalogue, "Dr. Strangelove (1964)") == CATALOGUE[46]


def test_the_year_picks_between_films_of_the_same_title(catalogue) -> None:
    assert resolved(catalogue, "Hamlet (1990)") == "Hamlet (1990)"
    assert resolved(catalogue, "Hamlet (1996)") == "Hamlet (1996)"
    assert resolved(catalogue, "Sabrina (1954)") == "Sabrina (1954)"
    assert resolved(catalogue, "Sabrina (1955)") == "Sabrina (1954)"
    assert resolved(catalogue, "Hamlet (1948)") is None


def test_fuzzy_matches_only_films_of_the_same_year(catalogue) -> None:
    assert resolved(catalogue, "The Usual Suspekts (1995)") == "Usual Suspects, The (1995)"
    assert resolved(catalogue, "Braveheartt") == "Braveheart (1995)"
    assert resolved(catalogue, "Braveheartt (1985)") is None
    # A sequel number is not a typo, with or without a year.
    assert resolved(catalogue, "RoboCop") is None
    assert resolved(catalogue, "Apollo 12 (1995)") is None


def test_fuzzy_threshold_keeps_its_meaning() -> None:
    index = CandidateIndex.build([1, 2], ["Bananas (1971)", "Sleeper (1973)"])
    assert index.resolve("Banannas", 85.0) == 0  # ratio 93
    assert index.resolve("Banannas", 95.0) is None


def test_subtitles_resolve_both_ways(catalogue) -> None:
    assert resolved(catalogue, "Star Wars: Episode IV - A New Hope (1977)") == "Star Wars (1977)"
    assert resolved(catalogue, "Terminator 2 (1991)") == "Terminator 2: Judgment Day (1991)"
    assert resolved(catalogue, "Star Wars: The Force Awakens (2015)") is None
    assert resolved(catalogue, "Star Wars: The Force Awakens") is None


BOOKS = [
    "Harry Potter and the Sorcerer's Stone (Harry Potter (Paperback))",
    "Harry Potter and the Chamber of Secrets (Book 2)",
    "The Lovely Bones: A Novel",
    "Wild Animus",
    "The Da Vinci Code",
    "Angels &amp; Demons",
    "The Red Tent (Bestselling Backlist)",
    "Divine Secrets of the Ya-Ya Sisterhood: A Novel",
]


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        (BOOKS[0], 0),
        ("Harry Potter and the Sorcerer's Stone", 0),
        ("Harry Potter and the Chamber of Secrets", 1),
        (BOOKS[1], 1),
        (BOOKS[2], 2),
        ("The Lovely Bones", 2),
        ("3. Wild Animus", 3),
        ("'The Da Vinci Code'", 4),
        ("Angels & Demons", 5),
        (BOOKS[5], 5),
        ("The Red Tent", 6),
        ("Harry Potter", None),
        ("Paperback", None),
    ],
)
def test_book_titles_match_whole_and_without_their_parenthetical(answer, want) -> None:
    index = CandidateIndex.build(list(range(len(BOOKS))), BOOKS)
    assert index.resolve(answer, 85.0) == want


def test_resolution_goes_through_score_batch_as_in_train_and_eval() -> None:
    titles = ["Thieves (Voleurs, Les) (1996)", "Innocent, The (1994)", "Third Man, The (1949)"]
    query = {
        "query_id": "titles",
        "candidate_item_ids": [7, 8, 9],
        "candidate_titles": titles,
        "positive_item_ids": [7],
    }
    attrs = pl.DataFrame({"item_id": [7, 8, 9], "attr_id": [1, 1, 2]})
    texts = [
        "\\boxed{Thieves (1996)}",
        "\\boxed{- 'Les Voleurs' (1996)}",
        "\\boxed{The Innocent (2004)}",
        "\\boxed{4. The Third Man (1949)}",
    ]
    out = score_batch(texts, [query] * len(texts), RewardIndex.from_tables(attrs), RewardWeights())
    assert out["pred"].tolist() == [7, 7, -1, 9]
    assert out["correct"].tolist() == [True, True, False, False]
    np.testing.assert_allclose(out["ndcg"], [1.0, 1.0, 0.0, 0.0])


# ------------------------------------------------------------------ measured recall
_ARTICLE = re.compile(r"^(.*), (The|A|An|Il|La|Le|Les|El|Das|Der|Det)$")
_GROUPS = re.compile(r"\s*\(([^()]*)\)")


def _parts(title: str) -> tuple[str, list[str], int]:
    year = int(title[-5:-1])
    rest = title[:-7]
    alternates = [g for g in _GROUPS.findall(rest) if not g.startswith("Harry")]
    main = _GROUPS.sub("", rest).strip()
    return main, alternates, year


def _front(title: str) -> str:
    m = _ARTICLE.match(title)
    return f"{m.group(2)} {m.group(1)}" if m else title


def answer_variants(title: str, rng: random.Random) -> list[str]:
    """What LLMs write for one catalogue film: article moved, an alternate title alone, list
    markers, quotes, case, no year, the year off by one."""
    main, alternates, year = _parts(title)
    names = [main, _front(main)] + [_front(a.removeprefix("a.k.a. ")) for a in alternates]
    out = []
    for name in names:
        for y in (f" ({year})", f" ({year - 1})", f" ({year + 1})", ""):
            base = name + y
            out += [base, base.lower(), base.upper()]
            marker = rng.choice(["4. ", "4) ", "- ", "* ", "• ", "#4 ", "12. "])
            quote = rng.choice([("'", "'"), ('"', '"'), ("“", "”"), ("‘", "’"), ("**", "**")])
            out += [marker + base, f"{quote[0]}{name}{quote[1]}{y}", f"{quote[0]}{base}{quote[1]}"]
            out.append(f"{marker}{quote[0]}{name}{quote[1]}{y}")
    return out


NOT_IN_CATALOGUE = [
    "The Innocent (2004)",
    "Little Women (1949)",
    "Little Women (2019)",
    "RoboCop (1987)",
    "RoboCop (2014)",
    "Mother of the Bride (1993)",
    "Hanna (2011)",
    "Terminal, The (2004)",
    "The Terminal (2004)",
    "Toy Story 2 (1999)",
    "Toy Story 3 (2010)",
    "Alien 3 (1992)",
    "Alien: Resurrection (1997)",
    "Babe: Pig in the City (1998)",
    "Batman (1989)",
    "Batman Returns (1992)",
    "Batman & Robin (1997)",
    "Hamlet (2000)",
    "Hamlet (1948)",
    "Sabrina (1975)",
    "Titanic (1953)",
    "Aladdin (2019)",
    "Beauty and the Beast (2017)",
    "The Lion King (2019)",
    "Jurassic World (2015)",
    "The Lost World: Jurassic Park (1997)",
    "Cinderella (2015)",
    "Father of the Bride (1991)",
    "Father of the Bride Part II (1995)",
    "The Godfather: Part III (1990)",
    "Sense and Sensibility (2008)",
    "Terminator 3: Rise of the Machines (2003)",
    "Star Trek: Generations (1994)",
    "Star Trek: The Motion Picture (1979)",
    "Star Wars: The Force Awakens (2015)",
    "Mission: Impossible II (2000)",
    "Heat (1986)",
    "Fargo (2014)",
    "The Big Sleep (1978)",
    "The Manchurian Candidate (2004)",
    "The Wizard of Oz (1925)",
    "12 Angry Men (1997)",
    "The Shining (1997)",
    "Henry V (1944)",
    "Much Ado About Nothing (2012)",
    "Seven Samurai (1954)",
    "Thief (1981)",
    "The Thief (1997)",
    "Anna Karenina (1997)",
    "Annie (1982)",
    "Apollo 18 (2011)",
    "Casablanca Express (1989)",
    "Germinal (1963)",
    "Aliens vs. Predator (2004)",
    "Heathers (1988)",
    "Braveheart (2005)",
    "Rob Roy (1922)",
    "Cinderella Man (2005)",
]


def test_measured_recall_and_credit_to_another_film() -> None:
    rng = random.Random(7)
    order = list(range(len(CATALOGUE)))
    rng.shuffle(order)
    hits = total = 0
    misses = []
    keys = [re.sub(r"\W+", " ", _front(_parts(t)[0]).lower()).strip() for t in CATALOGUE]
    ambiguous = {k for k in keys if keys.count(k) > 1}  # "Hamlet" alone: either Hamlet
    # Candidate sets of 20 (as the queries have), and the whole catalogue as one set.
    sets = [order[i : i + 20] for i in range(0, len(order), 20)] + [order]
    for members in sets:
        index = CandidateIndex.build([IDS[i] for i in members], [CATALOGUE[i] for i in members])
        for pos, i in enumerate(members):
            for answer in answer_variants(CATALOGUE[i], rng):
                if keys[i] in ambiguous and not re.search(r"\(\d{4}\)", answer):
                    continue
                total += 1
                got = index.resolve(answer, 85.0)
                hits += got == pos
                if got != pos:
                    misses.append((answer, CATALOGUE[i]))
    recall = hits / total
    assert total > 5000
    assert recall >= 0.995, (recall, misses[:20])

    whole = CandidateIndex.build(IDS, CATALOGUE)
    wrong = []
    for title in NOT_IN_CATALOGUE:
        for answer in (title, title.lower(), "1. " + title, f"'{title}'"):
            if whole.resolve(answer, 85.0) is not None:
                wrong.append((answer, resolved(whole, answer)))
    credited = len(wrong) / (4 * len(NOT_IN_CATALOGUE))
    assert credited <= 0.003, wrong


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=4), st.text())
def test_resolution_never_raises_on_any_titles_or_answer(titles, answer) -> None:
    index = CandidateIndex.build(list(range(len(titles))), titles)
    for text in (answer, f"{answer} (1995)", f"4. '{answer}'", *titles):
        pos = index.resolve(text, 85.0)
        assert pos is None or 0 <= pos < len(titles)
