"""Tiny source files in every format the graph stage reads, written by the tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl

from stages.core.store import ArtifactStore
from stages.graph.sources.movielens import ML100K_GENRES

# Five movies; "Usual Suspects, The" must match "The Usual Suspects", "Seven (Se7en)" must match
# "Se7en" one year off, "Postino, Il" must match "Il Postino: The Postman", "Cité" (accented)
# must match "Cite", and "Nowhere Film" matches nothing.
MOVIES = [
    (1, "Usual Suspects, The", 1995, "Crime Thriller"),
    (2, "Seven (Se7en)", 1995, "Crime Thriller"),
    (3, "Postino, Il", 1994, "Drama Romance"),
    (4, "Cité des enfants perdus, La", 1995, "Adventure Sci-Fi"),
    (5, "Nowhere Film", 1990, "Comedy"),
]
RATINGS = [  # user, item, rating, timestamp
    (10, 1, 5, 100),
    (10, 2, 4, 101),
    (10, 3, 3, 102),
    (11, 1, 4, 200),
    (11, 4, 2, 201),
    (12, 2, 5, 300),
    (12, 5, 1, 301),
]
USERS = [(10, 24, "M", "technician"), (11, 53, "F", "other"), (12, 23, "M", "writer")]
FILMS = [  # imdbID, Title, Year, Director, Writer, Cast, Language, Country
    (
        "tt1",
        "The Usual Suspects",
        1995,
        "Bryan Singer",
        "Christopher McQuarrie",
        "Kevin Spacey, Gabriel Byrne, Extra One",
        "English",
        "United States",
    ),
    (
        "tt2",
        "Se7en",
        1996,
        "David Fincher",
        "Andrew Kevin Walker",
        "Brad Pitt, Morgan Freeman, Kevin Spacey",
        "English",
        "United States",
    ),
    (
        "tt3",
        "Il Postino: The Postman",
        1994,
        "Michael Radford",
        "Anna Pavignano",
        "Philippe Noiret",
        "Italian, Spanish",
        "Italy, France",
    ),
    (
        "tt4",
        "La Cite des Enfants Perdus",
        1995,
        "Jean-Pierre Jeunet, Marc Caro",
        "Gilles Adrien",
        "Ron Perlman",
        "French",
        "France",
    ),
    ("tt5", "Nowhere Film", 1985, "Someone Else", "", "", "English", "United States"),
    ("tt6", "The Usual Suspects", 2015, "Wrong Remake", "", "", "English", "United States"),
    (
        "tt7",
        "Another Film",
        1990,
        "Bryan Singer",
        "",
        "Kevin Spacey, Brad Pitt",
        "English",
        "Canada",
    ),
]


def write_recbole_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\t{t}\t{y}\t{g}\n" for i, t, y, g in MOVIES)
    )
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    )
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join(f"{u}\t{a}\t{g}\t{o}\t00000\n" for u, a, g, o in USERS)
    )
    (folder / "ml-100k.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\n")
    (folder / "ml-100k.link").write_text("item_id:token\tentity_id:token\n")
    return folder


def write_films_db(path: Path, films=FILMS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(
        'CREATE TABLE omdb ("ID" INTEGER, "imdbID" TEXT, "Title" TEXT, "Year" INTEGER, '
        '"Director" TEXT, "Writer" TEXT, "Cast" TEXT, "Language" TEXT, "Country" TEXT)'
    )
    con.executemany(
        "INSERT INTO omdb VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(n, *film) for n, film in enumerate(films)],
    )
    con.commit()
    con.close()
    return path


def add_raw_artifacts(store: ArtifactStore, tmp: Path) -> None:
    """Put tiny `ml-100k` and `wikidata-films` artifacts in the store, as fetch would."""
    src = write_recbole_ml100k(tmp / "src" / "ml-100k")
    db = write_films_db(tmp / "src" / "movies.db")

    def ml(w):
        for f in src.iterdir():
            w.file(f"ml-100k/{f.name}").write_bytes(f.read_bytes())

    store.build("ml-100k", config={"test": True}, build=ml)
    store.build(
        "wikidata-films",
        config={"test": True},
        build=lambda w: w.file("movies.db").write_bytes(db.read_bytes()),
    )


def write_ml_official_100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    genres = ML100K_GENRES  # the column order of u.item
    lines = []
    for i, title, year, g in MOVIES:
        flags = ["1" if name in g.split() else "0" for name in genres]
        lines.append(f"{i}|{title} ({year})|01-Jan-{year}||http://x|" + "|".join(flags) + "\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|00000\n" for u, a, g, o in USERS))
    return folder


def write_ml_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS))
    (folder / "movies.dat").write_bytes(
        "".join(f"{i}::{t} ({y})::{g.replace(' ', '|')}\n" for i, t, y, g in MOVIES).encode(
            "latin-1"
        )
    )
    (folder / "users.dat").write_text("10::M::25::12::00000\n11::F::50::0::00000\n")
    return folder


def write_ml_csv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{i},{r}.5,{t}\n" for u, i, r, t in RATINGS)
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(f'{i},"{t} ({y})",{g.replace(" ", "|")}\n' for i, t, y, g in MOVIES)
    )
    return folder


def write_book_crossing(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    books = [
        (
            "0195153448",
            "Classical Mythology",
            "Mark P. O. Morford",
            "2002",
            "Oxford University Press",
        ),
        ("0-002-00501-8", "Clara Callan", "RICHARD BRUCE WRIGHT", "2001", "HarperFlamingo Canada"),
        ("0140442073", '\\"The Twilight of the Idols', "Friedrich Nietzsche", "1969", "Penguin"),
        ("0345417623", "Timeline", "MICHAEL CRICHTON", "2000", "Ballantine Books"),
        ("039304317X", "Caf\xe9 Stories &amp; More", "J. K. Rowling", "0", "Norton"),
        ("12", "Broken ISBN", "Nobody", "1999", "None"),
    ]
    head = '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S"\n'
    body = "".join(";".join(f'"{v}"' for v in (*b, "http://img")) + "\n" for b in books)
    (folder / "BX-Books.csv").write_bytes((head + body).encode("latin-1"))
    ratings = [
        ("1", "0195153448", "5"),
        ("1", "0002005018", "0"),
        ("2", "0002005018", "8"),
        ("2", "0140442073", "7"),
        ("3", "0345417623", "0"),
        ("3", "9999999999", "9"),
        ("4", "N/A", "3"),
        ("2", "039304317x", "10"),
    ]
    (folder / "BX-Book-Ratings.csv").write_text(
        '"User-ID";"ISBN";"Book-Rating"\n' + "".join(f'"{u}";"{i}";"{r}"\n' for u, i, r in ratings)
    )
    (folder / "BX-Users.csv").write_bytes(
        (
            '"User-ID";"Location";"Age"\n"1";"nyc, new york, usa";NULL\n'
            '"2";"m\xfcnchen, bayern, germany";"34"\n"3";"porto, portugal";"230"\n'
        ).encode("latin-1")
    )
    return folder


def write_generic(folder: Path, fmt: str = "csv") -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    items = pl.DataFrame(
        {
            "sku": ["a", "b", "c", "d"],
            "name": ["Alpha", "Beta", "Gamma", "Delta"],
            "released": [2001, 2011, None, 1999],
        }
    )
    attrs = pl.DataFrame(
        {
            "sku": ["a", "a", "b", "c", "d"],
            "kind": ["brand", "color", "brand", "color", "brand"],
            "val": ["acme", "red", "acme", "red", "zeta"],
        }
    )
    inter = pl.DataFrame(
        {
            "who": ["u1", "u1", "u2", "u3", "u3"],
            "sku": ["a", "b", "a", "c", "d"],
            "stars": [5.0, 3.0, 4.0, 2.0, 1.0],
            "when": [1, 2, 3, 4, 5],
        }
    )
    paths = {}
    for name, df in (("items", items), ("attrs", attrs), ("inter", inter)):
        path = folder / f"{name}.{fmt}"
        if fmt == "parquet":
            df.write_parquet(path)
        else:
            df.write_csv(path)
        paths[name] = path
    return paths
