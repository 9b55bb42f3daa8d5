"""`rerec build-graph`: adapters, title matching, counts against brute force, bad input."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import polars as pl
import pytest

from stages.core.errors import UserError
from stages.graph.assemble import k_core
from stages.graph.config import BuildGraphConfig
from stages.graph.film_facts import match_films, read_wikidata_films
from stages.graph.sources.book_crossing import clean_isbn, normalise_person, read_book_crossing
from stages.graph.sources.generic import read_generic
from stages.graph.sources.movielens import read_movielens
from stages.graph.sources.recbole import read_recbole_atomic, read_recbole_ml100k
from stages.graph.stage import build_graph
from stages.text.titles import normalise_title, split_title_year
from tests.fixtures.sources import (
    MOVIES,
    RATINGS,
    add_raw_artifacts,
    write_book_crossing,
    write_films_db,
    write_generic,
    write_ml_1m,
    write_ml_csv,
    write_ml_official_100k,
    write_recbole_ml100k,
)


def facts(art, relation: str) -> dict[str, set[str]]:
    """title -> values of one relation, read back from the artifact's tables."""
    items = art.read("items")
    attrs = art.read("attributes").filter(pl.col("relation") == relation)
    joined = art.read("item_attributes").join(attrs, on="attr_id").join(items, on="item_id")
    out: dict[str, set[str]] = defaultdict(set)
    for title, value in joined.select("title", "value").iter_rows():
        out[title].add(value)
    return dict(out)


# ------------------------------------------------------------------ titles and matching
@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Usual Suspects, The", "usual suspects"),
        ("The Usual Suspects", "usual suspects"),
        ("Postino, Il", "il postino"),
        ("Cité des enfants perdus, La", "la cite des enfants perdus"),
        ("Prêt-à-Porter", "pret a porter"),
        ("Angels & Insects", "angels and insects"),
        ("Angels and Insects", "angels and insects"),
        ("Mr. Holland's Opus", "mr holland s opus"),
        ("  Se7en  ", "se7en"),
        ("A Fish Called Wanda", "fish called wanda"),
    ],
)
def test_title_normalisation(raw: str, key: str) -> None:
    assert pl.select(normalise_title(pl.lit(raw))).item() == key


def test_title_and_year_split() -> None:
    title, year = split_title_year(pl.col("t"))
    df = pl.DataFrame({"t": ["Toy Story (1995)", "Seven (Se7en) (1995)", "No Year"]})
    got = df.select(title.alias("title"), year.alias("year"))
    assert got.rows() == [("Toy Story", 1995), ("Seven (Se7en)", 1995), ("No Year", None)]


def test_year_tolerant_matching(tmp_path: Path) -> None:
    films = read_wikidata_films(write_films_db(tmp_path / "m.db"))
    items = pl.DataFrame(
        {
            "item_key": [i for i, *_ in MOVIES],
            "title": [t for _, t, *_ in MOVIES],
            "year": [y for *_, y, _ in MOVIES],
        },
        schema_overrides={"year": pl.Int32},
    )
    strict = dict(match_films(items, films, year_tolerance=0).iter_rows())
    assert strict == {1: "tt1", 3: "tt3", 4: "tt4"}  # Se7en is one year off
    loose = dict(match_films(items, films, year_tolerance=1).iter_rows())
    assert loose == {1: "tt1", 2: "tt2", 3: "tt3", 4: "tt4"}  # never the 2015 remake
    wide = dict(match_films(items, films, year_tolerance=5).iter_rows())
    assert wide[5] == "tt5"


def test_exact_year_beats_a_neighbouring_year(tmp_path: Path) -> None:
    films = read_wikidata_films(
        write_films_db(
            tmp_path / "m.db",
            films=[
                ("ttA", "Twins", 1989, "X", "", "", "", ""),
                ("ttB", "Twins", 1988, "Ivan Reitman", "", "", "", ""),
            ],
        )
    )
    items = pl.DataFrame(
        {"item_key": [1], "title": ["Twins"], "year": [1988]}, schema_overrides={"year": pl.Int32}
    )
    assert match_films(items, films, 1).rows() == [(1, "ttB")]


# ------------------------------------------------------------------ adapters
def _check_movies(src, *, ratings_offset: float = 0.0) -> None:
    assert src.domain == "movies"
    assert src.items.sort("item_key").rows() == [(i, t, y) for i, t, y, _ in MOVIES]
    genres = Counter(v for v in src.item_attrs.filter(pl.col("relation") == "genre")["value"])
    assert genres == Counter(g for *_, gs in MOVIES for g in gs.split())
    inter = src.interactions.sort("user_key", "item_key")
    assert inter.select("user_key", "item_key").rows() == sorted((u, i) for u, i, *_ in RATINGS)
    assert inter["rating"].to_list() == [r + ratings_offset for *_, r, _ in sorted(RATINGS)]


def test_recbole_adapter(tmp_path: Path) -> None:
    src = read_recbole_ml100k(write_recbole_ml100k(tmp_path / "ml"))
    _check_movies(src)
    assert src.users.sort("user_key").rows()[0] == (10, 24, "M", "technician", None)


def test_any_recbole_atomic_folder_without_mapping(tmp_path: Path) -> None:
    # RecBole's own ml-100k files read by the generic RecBole adapter: the same items, years
    # and interactions as the dedicated reader, genres as `genre` attributes
    folder = write_recbole_ml100k(tmp_path / "ml")
    generic, dedicated = read_recbole_atomic(folder, "movies"), read_recbole_ml100k(folder)
    key = pl.col("item_key").cast(pl.Int64)
    for table in ("items", "interactions"):
        a = getattr(generic, table).with_columns(key).sort(pl.all())
        b = getattr(dedicated, table).with_columns(key).sort(pl.all())
        assert a.select(b.columns).equals(b.select(b.columns).cast(a.select(b.columns).schema))
    genres = generic.item_attrs.filter(pl.col("relation") == "genre").with_columns(key)
    assert genres.sort(pl.all()).equals(
        dedicated.item_attrs.with_columns(key).cast(genres.schema).sort(pl.all())
    )
    # a books dataset with a token author and a token_seq category list
    books = tmp_path / "books"
    books.mkdir()
    (books / "bx.inter").write_text(
        "user_id:token\titem_id:token\tscore:float\nu1\tb1\t1\nu2\tb2\t1\n"
    )
    (books / "bx.item").write_text(
        "item_id:token\tbook_title:token_seq\tbook_author:token\tpublish_year:token\tcategories:token_seq\n"
        "b1\tThe Hobbit\tTolkien\t1937\tFantasy Adventure\n"
        "b2\tDune\tHerbert\t1965\tScience\n"
    )
    src = read_recbole_atomic(books, "books")
    assert src.items.sort("item_key").rows() == [("b1", "The Hobbit", 1937), ("b2", "Dune", 1965)]
    assert sorted(src.item_attrs.rows()) == [
        ("b1", "author", "Tolkien"), ("b1", "genre", "Adventure"), ("b1", "genre", "Fantasy"),
        ("b2", "author", "Herbert"), ("b2", "genre", "Science"),
    ]  # fmt: skip
    assert src.interactions["rating"].null_count() == 2 and src.users is None
    (books / "bx.item").write_text("item_id:token\tisbn:token\nb1\tx\n")
    with pytest.raises(UserError, match="needs item_id and a title field"):
        read_recbole_atomic(books, "books")


def test_recbole_source_through_the_cli(rerec, store, tmp_path: Path) -> None:
    folder = write_recbole_ml100k(tmp_path / "ml")
    r = rerec(
        "build-graph", "--source", "recbole", "--input-dir", str(folder), "--domain", "movies"
    )
    assert r.exit_code == 0, r.stderr
    graph = store.resolve("graph-movies")
    assert graph.read("items").height == len(MOVIES)
    assert rerec("build-graph", "--source", "recbole").exit_code == 2


def test_official_ml100k_adapter(tmp_path: Path) -> None:
    src = read_movielens(write_ml_official_100k(tmp_path / "ml"))
    _check_movies(src)
    assert src.users.height == 3


def test_ml1m_adapter_reads_latin1_and_double_colons(tmp_path: Path) -> None:
    src = read_movielens(write_ml_1m(tmp_path / "ml"))
    _check_movies(src)
    assert src.users.sort("user_key").select("user_key", "occupation").rows() == [
        (10, "programmer"),
        (11, "other"),
    ]


def test_ml_csv_adapter(tmp_path: Path) -> None:
    _check_movies(read_movielens(write_ml_csv(tmp_path / "ml")), ratings_offset=0.5)


def test_book_crossing_adapter(tmp_path: Path) -> None:
    folder = write_book_crossing(tmp_path / "bx")
    src = read_book_crossing(folder, "explicit")
    books = dict(src.items.select("item_key", "title").iter_rows())
    assert books["0002005018"] == "Clara Callan"  # hyphens cleaned
    assert books["0140442073"] == '"The Twilight of the Idols'  # backslash-escaped quote
    assert books["039304317X"] == "Café Stories & More"  # latin-1 and &amp;
    assert "12" not in books and src.dropped["books_with_invalid_isbn"] == 1
    authors = dict(
        src.item_attrs.filter(pl.col("relation") == "author")
        .select("item_key", "value")
        .iter_rows()
    )
    assert authors["0002005018"] == "Richard Bruce Wright"
    assert authors["039304317X"] == "J.K. Rowling"
    assert authors["0195153448"] == "Mark P.O. Morford"
    assert src.items.filter(pl.col("item_key") == "039304317X")["year"].item() is None
    explicit = src.interactions.select("user_key", "item_key", "rating").sort(
        "user_key", "item_key"
    )
    assert explicit.rows() == [
        (1, "0195153448", 5.0),
        (2, "0002005018", 8.0),
        (2, "0140442073", 7.0),
        (2, "039304317X", 10.0),
        (3, "9999999999", 9.0),
    ]
    assert src.dropped["ratings_with_invalid_isbn"] == 1
    everything = read_book_crossing(folder, "all").interactions
    assert everything.height == 7
    assert everything.filter(pl.col("rating").is_null()).height == 2
    ages = dict(src.users.select("user_key", "age").iter_rows())
    assert ages == {1: None, 2: 34, 3: None}


def test_isbn_and_author_cleaning() -> None:
    df = pl.DataFrame({"s": ["0-345-41762-3", "039304317x", "978-0-14-044207-3", "12", None]})
    assert df.select(clean_isbn(pl.col("s")))["s"].to_list() == [
        "0345417623",
        "039304317X",
        "9780140442073",
        None,
        None,
    ]
    names = pl.DataFrame(
        {"s": ["J. R. R. Tolkien", "STEPHEN KING", "bell hooks", "Dean R. Koontz"]}
    )
    assert names.select(normalise_person(pl.col("s")))["s"].to_list() == [
        "J.R.R. Tolkien",
        "Stephen King",
        "Bell Hooks",
        "Dean R. Koontz",
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "hf-dataset"])
def test_generic_adapter_with_column_mapping(tmp_path: Path, fmt: str) -> None:
    paths = write_generic(tmp_path / "g", fmt)
    src = read_generic(
        domain="gadgets",
        items_path=paths["items"],
        interactions_path=paths["inter"],
        item_attributes_path=paths["attrs"],
        users_path=None,
        delimiter=None,
        columns={
            "item_id": "sku",
            "title": "name",
            "year": "released",
            "user_id": "who",
            "rating": "stars",
            "timestamp": "when",
            "relation": "kind",
            "value": "val",
        },
    )
    assert src.items.rows() == [
        ("a", "Alpha", 2001),
        ("b", "Beta", 2011),
        ("c", "Gamma", None),
        ("d", "Delta", 1999),
    ]
    assert src.item_attrs.height == 5 and src.interactions.height == 5


# ------------------------------------------------------------------ the whole stage
def test_movie_graph_end_to_end_through_the_cli(rerec, store, tmp_path: Path) -> None:
    add_raw_artifacts(store, tmp_path)
    result = rerec("build-graph")
    assert result.exit_code == 0, result.stderr
    assert "4 items matched (80.0% of items" in result.stdout
    art = store.resolve("graph")
    m = art.manifest
    # By hand: genre 9 edges, decade 5, director 5, writer 4, cast 8 (3+3+1+1), language 5,
    # country 5 = 41 edges over 7+1+5+4+7+4+3 = 31 attribute nodes.
    assert m.row_counts == {
        "items": 5,
        "users": 3,
        "interactions": 7,
        "attributes": 31,
        "item_attributes": 41,
    }
    assert {i.name for i in m.inputs} == {"ml-100k", "wikidata-films"}
    assert facts(art, "director") == {
        "Usual Suspects, The": {"Bryan Singer"},
        "Seven (Se7en)": {"David Fincher"},
        "Postino, Il": {"Michael Radford"},
        "Cité des enfants perdus, La": {"Jean-Pierre Jeunet", "Marc Caro"},
    }
    assert facts(art, "decade") == {t: {"1990s"} for _, t, *_ in MOVIES}
    assert facts(art, "language")["Postino, Il"] == {"Italian", "Spanish"}
    assert m.metrics["relations"]["director"]["item_coverage"] == 0.8
    # 6 of 7 interactions are with matched movies (item 5 is not matched).
    assert m.metrics["relations"]["director"]["interaction_coverage"] == round(6 / 7, 4)
    items = art.read("items")
    assert items.select("source_id", "external_id").rows() == [
        ("1", "tt1"),
        ("2", "tt2"),
        ("3", "tt3"),
        ("4", "tt4"),
        ("5", None),
    ]
    # The DuckDB file holds the same tables as the Parquet files.
    con = duckdb.connect(str(art.path / "graph.duckdb"), read_only=True)
    for table in ("items", "attributes", "item_attributes", "users", "interactions"):
        assert con.sql(f"SELECT * FROM {table}").pl().equals(art.read(table))
    assert con.execute("SELECT count(*) FROM item_facts").fetchone()[0] == 41
    con.close()
    again = rerec("build-graph")
    assert again.exit_code == 0 and "already built" in again.stdout
    # A forced rebuild writes a new DuckDB file (not byte-identical) but the same content hash.
    assert rerec("build-graph", "--force").exit_code == 0
    assert store.resolve("graph").manifest.content_hash == m.content_hash


def test_cast_keeps_the_most_prolific_actors(store, tmp_path: Path) -> None:
    add_raw_artifacts(store, tmp_path)
    art = build_graph(store, BuildGraphConfig(cast_top_n=2)).artifact
    cast = facts(art, "cast")
    # Kevin Spacey is in 3 films of the table, Brad Pitt in 2, everyone else in 1.
    assert cast["Usual Suspects, The"] == {"Kevin Spacey", "Gabriel Byrne"}
    assert cast["Seven (Se7en)"] == {"Kevin Spacey", "Brad Pitt"}


def test_no_enrichment_means_no_film_facts(store, tmp_path: Path) -> None:
    add_raw_artifacts(store, tmp_path)
    art = build_graph(store, BuildGraphConfig(enrich=False)).artifact
    assert set(art.read("attributes")["relation"]) == {"genre", "decade"}
    assert [i.name for i in art.manifest.inputs] == ["ml-100k"]


def test_book_graph_is_its_own_artifact(store, tmp_path: Path) -> None:
    folder = write_book_crossing(tmp_path / "bx")
    art = build_graph(store, BuildGraphConfig(source="book-crossing", input_dir=folder)).artifact
    assert art.name == "graph-books"
    assert art.manifest.metrics["dropped"]["interactions_with_unknown_item"] == 1  # 9999999999
    assert set(art.read("attributes")["relation"]) == {"author", "publisher", "decade"}


def _random_generic(folder: Path, seed: int) -> tuple[dict[str, Path], dict]:
    rng = random.Random(seed)
    items = [f"i{n}" for n in range(40)]
    years = {i: rng.choice([None, 1971, 1985, 1999, 2003]) for i in items}
    attrs = {(i, rng.choice("abc"), f"v{rng.randrange(6)}") for i in items for _ in range(3)}
    inter = {(f"u{rng.randrange(25)}", rng.choice(items)) for _ in range(300)}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "items": folder / "items.csv",
        "attrs": folder / "attrs.csv",
        "inter": folder / "inter.csv",
    }
    pl.DataFrame(
        {"item_id": items, "title": [i.upper() for i in items], "year": [years[i] for i in items]}
    ).write_csv(paths["items"])
    pl.DataFrame(sorted(attrs), schema=["item_id", "relation", "value"], orient="row").write_csv(
        paths["attrs"]
    )
    pl.DataFrame(sorted(inter), schema=["user_id", "item_id"], orient="row").write_csv(
        paths["inter"]
    )
    return paths, {"items": items, "years": years, "attrs": attrs, "inter": inter}


@pytest.mark.parametrize("k", [0, 3])
def test_counts_match_a_brute_force_computation(store, tmp_path: Path, k: int) -> None:
    paths, data = _random_generic(tmp_path / "g", seed=k)
    cfg = BuildGraphConfig(
        source="generic",
        domain="toys",
        items_path=paths["items"],
        interactions_path=paths["inter"],
        item_attributes_path=paths["attrs"],
        k_core=k,
        columns={"year": "year"},
    )
    art = build_graph(store, cfg).artifact
    # Brute force: k-core by repeated counting, then attribute degrees by dictionary.
    inter = set(data["inter"])
    while k > 1:
        users = Counter(u for u, _ in inter)
        items = Counter(i for _, i in inter)
        kept = {(u, i) for u, i in inter if users[u] >= k and items[i] >= k}
        if kept == inter:
            break
        inter = kept
    kept_items = set(data["items"]) if k <= 1 else {i for _, i in inter}
    degree: Counter = Counter()
    for item, rel, value in data["attrs"]:
        if item in kept_items:
            degree[(rel, value)] += 1
    for item in kept_items:
        year = data["years"][item]
        if year is not None:
            degree[("decade", f"{year // 10 * 10}s")] += 1
    got = {
        (r, v): n
        for r, v, n in art.read("attributes").select("relation", "value", "item_count").iter_rows()
    }
    assert got == dict(degree)
    assert art.read("items").height == len(kept_items)
    assert art.read("interactions").height == len(inter)
    assert art.read("users").height == len({u for u, _ in inter})
    assert art.read("item_attributes").height == sum(degree.values())
    pairs = (
        art.read("interactions")
        .join(art.read("users"), on="user_id")
        .join(art.read("items"), on="item_id")
        .select("source_id", "source_id_right")
        .rows()
    )
    assert set(pairs) == inter
    relation_stats = art.manifest.metrics["relations"]
    for rel in {r for r, _ in degree}:
        counts = [n for (r, _), n in degree.items() if r == rel]
        assert relation_stats[rel]["attributes"] == len(counts)
        assert relation_stats[rel]["edges"] == sum(counts)
        assert relation_stats[rel]["degree_max"] == max(counts)


def test_k_core_removes_in_cascade() -> None:
    # u3-c goes (c has one rating); u4-d goes, which leaves u4 with one: u4-a goes too.
    df = pl.DataFrame(
        {
            "user_key": ["u1", "u1", "u2", "u2", "u3", "u4", "u4"],
            "item_key": ["a", "b", "a", "b", "c", "a", "d"],
        }
    )
    assert k_core(df, 2).sort("user_key", "item_key").rows() == [
        ("u1", "a"),
        ("u1", "b"),
        ("u2", "a"),
        ("u2", "b"),
    ]
    assert k_core(df, 3).height == 0
    assert k_core(df, 0).equals(df)


# ------------------------------------------------------------------ bad input
def _generic_args(paths: dict[str, Path]) -> list[str]:
    return [
        "build-graph",
        "--source",
        "generic",
        "--items",
        str(paths["items"]),
        "--interactions",
        str(paths["inter"]),
    ]


def _assert_clean_failure(result, store, *fragments: str) -> None:
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    for fragment in fragments:
        assert fragment in result.stderr
    assert [n for n in store.names() if n.startswith("graph")] == []
    assert not list(store.root.glob("graph*/.tmp-*"))


def test_missing_file(rerec, store, tmp_path: Path) -> None:
    result = rerec("build-graph", "--source", "movielens", "--input-dir", str(tmp_path / "nope"))
    _assert_clean_failure(result, store, "input folder", "does not exist")


def test_missing_fetched_artifact(rerec, store) -> None:
    _assert_clean_failure(
        rerec("build-graph"), store, "no artifact 'ml-100k'", "rerec fetch ml-100k"
    )


def test_missing_movielens_file(rerec, store, tmp_path: Path) -> None:
    folder = write_ml_1m(tmp_path / "ml")
    (folder / "movies.dat").unlink()
    result = rerec(
        "build-graph", "--source", "movielens", "--input-dir", str(folder), "--no-enrich"
    )
    _assert_clean_failure(result, store, "movies.dat does not exist")


def test_wrong_delimiter(rerec, store, tmp_path: Path) -> None:
    paths = write_generic(tmp_path / "g")
    paths["inter"].write_text(paths["inter"].read_text().replace(",", ";"))
    result = rerec(
        *_generic_args(paths),
        "--column",
        "item_id=sku",
        "--column",
        "title=name",
        "--column",
        "user_id=who",
    )
    _assert_clean_failure(result, store, "inter.csv", "wrong delimiter?")


def test_wrong_encoding(rerec, store, tmp_path: Path) -> None:
    paths = write_generic(tmp_path / "g")
    paths["items"].write_bytes("sku,name\na,Caf\xe9\nb,B\nc,C\nd,D\n".encode("latin-1"))
    result = rerec(
        *_generic_args(paths),
        "--column",
        "item_id=sku",
        "--column",
        "title=name",
        "--column",
        "user_id=who",
    )
    _assert_clean_failure(result, store, "items.csv", "utf-8", "encoding")


def test_missing_column(rerec, store, tmp_path: Path) -> None:
    paths = write_generic(tmp_path / "g")
    result = rerec(*_generic_args(paths), "--column", "item_id=sku", "--column", "title=title")
    _assert_clean_failure(
        result, store, "items.csv: missing column 'title'", "found: sku, name, released"
    )


def test_duplicate_ids(rerec, store, tmp_path: Path) -> None:
    folder = write_recbole_ml100k(tmp_path / "ml")
    item_file = folder / "ml-100k.item"
    item_file.write_text(item_file.read_text() + "3\tDuplicate\t1999\tDrama\n")
    result = rerec("build-graph", "--input-dir", str(folder), "--no-enrich")
    _assert_clean_failure(result, store, "ml-100k.item", "duplicate id 3", "rows 3 and 6")


def test_non_numeric_rating(rerec, store, tmp_path: Path) -> None:
    folder = write_ml_csv(tmp_path / "ml")
    ratings = folder / "ratings.csv"
    ratings.write_text(ratings.read_text() + "13,1,lots,999\n")
    result = rerec(
        "build-graph", "--source", "movielens", "--input-dir", str(folder), "--no-enrich"
    )
    _assert_clean_failure(
        result, store, "ratings.csv line 9", "column 'rating'", "'lots'", "not a number"
    )


def test_interaction_with_unknown_item(rerec, store, tmp_path: Path) -> None:
    folder = write_recbole_ml100k(tmp_path / "ml")
    inter = folder / "ml-100k.inter"
    inter.write_text(inter.read_text() + "10\t77\t3\t999\n")
    args = ("build-graph", "--input-dir", str(folder), "--no-enrich")
    _assert_clean_failure(
        rerec(*args), store, "ml-100k.inter row 8: item 77 is not in", "--unknown-items drop"
    )
    dropped = rerec(*args, "--unknown-items", "drop")
    assert dropped.exit_code == 0
    assert "interactions with unknown item 1" in dropped.stdout


def test_impossible_options(rerec, store) -> None:
    _assert_clean_failure(rerec("build-graph", "--k-core", "-1"), store, "k_core")
    _assert_clean_failure(rerec("build-graph", "--source", "generic"), store, "--items")
    _assert_clean_failure(rerec("build-graph", "--output", "movies"), store, "graph-")


def test_missing_films_database(store, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="rerec fetch wikidata-films"):
        read_wikidata_films(tmp_path / "none.db")


def test_hugging_face_dataset_folders_through_the_cli(rerec, store, tmp_path: Path) -> None:
    paths = write_generic(tmp_path / "g", "hf-dataset")
    args = ["build-graph", "--source", "generic", "--domain", "gadgets"]
    args += ["--items", str(paths["items"]), "--interactions", str(paths["inter"])]
    args += ["--item-attributes", str(paths["attrs"])]
    cols = ["item_id=sku", "title=name", "year=released", "user_id=who", "rating=stars"]
    cols += ["timestamp=when", "relation=kind", "value=val"]
    r = rerec(*args, *[x for c in cols for x in ("--column", c)])
    assert r.exit_code == 0, r.stderr
    graph = store.resolve("graph-gadgets")
    assert graph.read("items").height == 4 and graph.read("interactions").height == 5
    # the dataset's files are hashed into the version: a changed dataset is a new graph
    hashed = graph.manifest.config["external_files"]
    assert any(k.startswith(str(paths["items"].resolve()) + "/") for k in hashed)
    r = rerec("build-graph", "--source", "generic", "--items", str(tmp_path), "--interactions",
              str(paths["inter"]))  # fmt: skip
    assert r.exit_code == 2 and "not a Hugging Face dataset" in r.stderr
