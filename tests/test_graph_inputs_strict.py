"""`rerec build-graph --source generic` on bad input: each case is either one line on stderr with
exit code 2 naming the file, the row and the column (and no graph written), or a drop that is
counted in the graph's stats. Tiny files, written by each test; every test drives the real CLI."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.fixtures.sources import write_ml_csv

BOM = "\ufeff"
ITEMS = "item_id,title,year\na,Alpha,2001\nb,Beta,1999\nc,Gamma,\n"
INTER = "user_id,item_id,rating,timestamp\nu1,a,5,10\nu1,b,3,11\nu2,a,4,12\n"


def write(folder: Path, **files: str | bytes | pl.DataFrame) -> dict[str, Path]:
    """``name=content`` -> folder/name.csv (text or bytes) or folder/name.parquet (a frame)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in files.items():
        if isinstance(content, pl.DataFrame):
            path = folder / f"{name}.parquet"
            content.write_parquet(path)
        else:
            path = folder / f"{name}.csv"
            data = content if isinstance(content, bytes) else content.encode()
            path.write_bytes(data)
        paths[name] = path
    return paths


def build(rerec, paths: dict[str, Path], *extra: str):
    args = ["build-graph", "--source", "generic"]
    flags = {
        "items": "--items",
        "inter": "--interactions",
        "attrs": "--item-attributes",
        "users": "--users",
    }
    for name, flag in flags.items():
        if name in paths:
            args += [flag, str(paths[name])]
    return rerec(*args, *extra)


def assert_one_line_error(result, store, *fragments: str) -> None:
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert [n for n in store.names() if n.startswith("graph")] == []
    assert not list(store.root.glob("graph*/.tmp-*"))


def dropped(store) -> dict[str, int]:
    return store.resolve("graph-items").manifest.metrics["dropped"]


# ------------------------------------------------------------------ columns by their own name
def test_generic_reads_rating_timestamp_year_columns_by_name(rerec, store, tmp_path) -> None:
    result = build(rerec, write(tmp_path, items=ITEMS, inter=INTER))
    assert result.exit_code == 0, result.stderr
    art = store.resolve("graph-items")
    inter = art.read("interactions").sort("timestamp")
    assert inter["rating"].to_list() == [5.0, 3.0, 4.0]
    assert inter["timestamp"].to_list() == [10, 11, 12]
    assert art.read("items")["year"].to_list() == [2001, 1999, None]
    assert set(art.read("attributes")["value"]) == {"2000s", "1990s"}  # decades from the years


def test_generic_reads_user_columns_by_name(rerec, store, tmp_path) -> None:
    users = "user_id,age,gender,occupation,location\nu1,31,F,nurse,Oslo\nu2,n/a,M,,Bergen\n"
    result = build(rerec, write(tmp_path, items=ITEMS, inter=INTER, users=users))
    assert result.exit_code == 0, result.stderr
    rows = store.resolve("graph-items").read("users").drop("user_id").rows()
    assert rows == [("u1", 31, "F", "nurse", "Oslo"), ("u2", None, "M", None, "Bergen")]


def test_mapped_column_wins_over_a_column_with_our_name(rerec, store, tmp_path) -> None:
    inter = "user_id,item_id,rating,stars\nu1,a,junk,5\nu2,b,junk,2\n"
    result = build(rerec, write(tmp_path, items=ITEMS, inter=inter), "--column", "rating=stars")
    assert result.exit_code == 0, result.stderr
    assert store.resolve("graph-items").read("interactions")["rating"].sort().to_list() == [
        2.0,
        5.0,
    ]


def test_unknown_column_mapping_is_one_line_error(rerec, store, tmp_path) -> None:
    paths = write(tmp_path, items=ITEMS, inter=INTER)
    result = build(rerec, paths, "--column", "itemid=sku")
    assert_one_line_error(result, store, "--column itemid=sku", "no column 'itemid'", "item_id")


def test_column_mapped_twice_is_one_line_error(rerec, store, tmp_path) -> None:
    paths = write(tmp_path, items=ITEMS, inter=INTER)
    result = build(rerec, paths, "--column", "item_id=sku", "--column", "item_id=id")
    assert_one_line_error(result, store, "--column item_id=", "'sku' and 'id'")


# ------------------------------------------------------------------ errors naming the row
@pytest.mark.parametrize("rating", ["nan", "inf", "-inf", "-1"])
def test_nan_rating_is_one_line_error_naming_row(rerec, store, tmp_path, rating: str) -> None:
    inter = f"user_id,item_id,rating\nu1,a,5\nu2,b,{rating}\n"
    result = build(rerec, write(tmp_path, items=ITEMS, inter=inter))
    assert_one_line_error(result, store, "inter.csv row 2", "column 'rating'", "finite number >= 0")


def test_empty_rating_means_no_rating(rerec, store, tmp_path) -> None:
    inter = "user_id,item_id,rating\nu1,a,5\nu2,b,\n"
    assert build(rerec, write(tmp_path, items=ITEMS, inter=inter)).exit_code == 0
    assert store.resolve("graph-items").read("interactions")["rating"].sort().to_list() == [
        None,
        5.0,
    ]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("items", "item_id,title\na,Alpha\n ,Blank\n", "items.csv row 2: empty item id"),
        ("inter", "user_id,item_id\nu1,a\n,b\n", "inter.csv row 2: empty user id"),
        ("inter", 'user_id,item_id\nu1,a\nu2,""\n', "inter.csv row 2: empty item id"),
        ("attrs", "item_id,relation,value\na,brand,x\n,brand,y\n", "attrs.csv row 2: empty item"),
        ("users", "user_id,age\nu1,3\n,4\n", "users.csv row 2: empty user id"),
    ],
)
def test_empty_id_is_one_line_error_naming_row(
    rerec, store, tmp_path, name: str, content: str, fragment: str
) -> None:
    files = {"items": ITEMS, "inter": INTER, name: content}
    result = build(rerec, write(tmp_path, **files))
    assert_one_line_error(result, store, fragment, "column '", "fill it in or remove the row")


def test_empty_title_is_one_line_error_naming_row(rerec, store, tmp_path) -> None:
    items = "sku,name\na,Alpha\nb,\n"
    paths = write(tmp_path, items=items, inter=INTER)
    result = build(rerec, paths, "--column", "item_id=sku", "--column", "title=name")
    assert_one_line_error(result, store, "items.csv row 2: empty title in column 'name'")


def test_nul_byte_in_title_is_one_line_error_naming_row(rerec, store, tmp_path) -> None:
    items = b"item_id,title\na,Alpha\nb,Be\x00ta\n"
    result = build(rerec, write(tmp_path, items=items, inter=INTER))
    assert_one_line_error(result, store, "items.csv row 2", "column 'title'", "NUL byte")


def test_header_only_interactions_file_is_one_line_error(rerec, store, tmp_path) -> None:
    paths = write(tmp_path, items=ITEMS, inter="user_id,item_id,rating\n")
    result = build(rerec, paths)
    assert_one_line_error(result, store, "inter.csv: no rows", "at least one interaction")


def test_header_only_items_file_is_one_line_error(rerec, store, tmp_path) -> None:
    result = build(rerec, write(tmp_path, items="item_id,title\n", inter=INTER))
    assert_one_line_error(result, store, "items.csv: no rows", "at least one item")


def test_empty_relation_is_one_line_error_naming_row(rerec, store, tmp_path) -> None:
    attrs = "item_id,relation,value\na,brand,acme\nb,,acme\n"
    result = build(rerec, write(tmp_path, items=ITEMS, inter=INTER, attrs=attrs))
    assert_one_line_error(result, store, "attrs.csv row 2: empty relation in column 'relation'")


# ------------------------------------------------------------------ Parquet types
def test_numeric_text_ratings_in_parquet_are_read(rerec, store, tmp_path) -> None:
    inter = pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "rating": ["4.5", " 2"]})
    assert build(rerec, write(tmp_path, items=ITEMS, inter=inter)).exit_code == 0
    assert store.resolve("graph-items").read("interactions")["rating"].sort().to_list() == [
        2.0,
        4.5,
    ]


def test_text_rating_in_parquet_is_one_line_error_naming_row(rerec, store, tmp_path) -> None:
    inter = pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "rating": ["4", "good"]})
    result = build(rerec, write(tmp_path, items=ITEMS, inter=inter))
    assert_one_line_error(
        result, store, "inter.parquet row 2", "column 'rating'", "'good'", "not a number"
    )


def test_list_typed_item_id_in_parquet_is_one_line_error(rerec, store, tmp_path) -> None:
    items = pl.DataFrame({"item_id": [["a"], ["b"]], "title": ["Alpha", "Beta"]})
    result = build(rerec, write(tmp_path, items=items, inter=INTER))
    assert_one_line_error(result, store, "items.parquet", "column 'item_id'", "List(String)")


def test_parquet_integer_ids_and_datetime_timestamps_are_read(rerec, store, tmp_path) -> None:
    from datetime import datetime

    items = pl.DataFrame({"item_id": [1, 2], "title": ["Alpha", "Beta"]})
    inter = pl.DataFrame(
        {
            "user_id": [7, 8],
            "item_id": [2, 1],
            "timestamp": [datetime(1970, 1, 1, 0, 0, 10), datetime(1970, 1, 1, 0, 1)],
        }
    )
    assert build(rerec, write(tmp_path, items=items, inter=inter)).exit_code == 0
    assert store.resolve("graph-items").read("interactions")["timestamp"].sort().to_list() == [
        10,
        60,
    ]


# ------------------------------------------------------------------ counted drops
def test_duplicate_interactions_are_dropped_and_counted(rerec, store, tmp_path) -> None:
    # u1-a three times: the latest timestamp (11, rating 2) is kept although row 3 is later.
    inter = "user_id,item_id,rating,timestamp\nu1,a,5,10\nu1,a,2,11\nu1,a,4,9\nu2,a,1,12\n"
    result = build(rerec, write(tmp_path, items=ITEMS, inter=inter))
    assert result.exit_code == 0, result.stderr
    assert "duplicate interactions 2" in result.stdout
    assert dropped(store)["duplicate_interactions"] == 2
    kept = store.resolve("graph-items").read("interactions")
    assert kept.select("rating", "timestamp").sort("timestamp").rows() == [(2.0, 11), (1.0, 12)]


def test_duplicate_interactions_without_timestamps_keep_the_last_row(
    rerec, store, tmp_path
) -> None:
    inter = "user_id,item_id,rating\nu1,a,5\nu1,a,2\n"
    assert build(rerec, write(tmp_path, items=ITEMS, inter=inter)).exit_code == 0
    assert store.resolve("graph-items").read("interactions")["rating"].to_list() == [2.0]
    assert dropped(store)["duplicate_interactions"] == 1


def test_attribute_rows_for_unknown_items_are_dropped_and_counted(rerec, store, tmp_path) -> None:
    attrs = (
        "item_id,relation,value\n"
        "a,brand,acme\n"
        "zz,brand,acme\n"  # unknown item
        "b,brand,\n"  # empty value
        "a,brand,acme\n"  # repeated
        "b,color,red\n"
    )
    result = build(rerec, write(tmp_path, items=ITEMS, inter=INTER, attrs=attrs))
    assert result.exit_code == 0, result.stderr
    stats = dropped(store)
    assert stats["attribute_rows_unknown_item"] == 1
    assert stats["attribute_rows_empty_value"] == 1
    assert stats["duplicate_attribute_rows"] == 1
    assert "attribute rows unknown item 1" in result.stdout
    rel = store.resolve("graph-items").read("attributes").filter(pl.col("relation") != "decade")
    assert sorted(rel.select("relation", "value", "item_count").rows()) == [
        ("brand", "acme", 1),
        ("color", "red", 1),
    ]


# ------------------------------------------------------------------ byte-order marks
def test_bom_in_header_is_read(rerec, store, tmp_path) -> None:
    paths = write(
        tmp_path, items=BOM + ITEMS, inter=BOM + INTER, attrs=BOM + "item_id,k,v\na,x,y\n"
    )
    result = build(rerec, paths, "--column", "relation=k", "--column", "value=v")
    assert result.exit_code == 0, result.stderr
    art = store.resolve("graph-items")
    assert art.read("items")["source_id"].to_list() == ["a", "b", "c"]
    assert art.read("interactions").height == 3


def test_bom_in_quoted_header_with_mapped_first_column_is_read(rerec, store, tmp_path) -> None:
    items = BOM + '"sku","name"\n"a","Alpha"\n"b","Beta"\n'
    inter = BOM + '"who","sku"\n"u1","b"\n'
    paths = write(tmp_path, items=items, inter=inter)
    args = ("--column", "item_id=sku", "--column", "title=name", "--column", "user_id=who")
    result = build(rerec, paths, *args)
    assert result.exit_code == 0, result.stderr
    assert store.resolve("graph-items").read("users")["source_id"].to_list() == ["u1"]


def test_bom_in_parquet_column_name_is_read(rerec, store, tmp_path) -> None:
    items = pl.DataFrame({BOM + "item_id": ["a", "b", "c"], "title": ["A", "B", "C"]})
    result = build(rerec, write(tmp_path, items=items, inter=INTER))
    assert result.exit_code == 0, result.stderr


def test_bom_in_movielens_csv_header_is_read(rerec, store, tmp_path) -> None:
    folder = write_ml_csv(tmp_path / "ml")
    for name in ("ratings.csv", "movies.csv"):
        (folder / name).write_text(BOM + (folder / name).read_text())
    result = rerec(
        "build-graph", "--source", "movielens", "--input-dir", str(folder), "--no-enrich"
    )
    assert result.exit_code == 0, result.stderr
    assert store.resolve("graph").read("interactions").height == 7
