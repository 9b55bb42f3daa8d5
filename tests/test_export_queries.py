"""`rerec export QUERIES DIR`: each split as Parquet in TRL's conversational format, with the
prompts rerec itself renders."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from stages.llm.answers import parse_boxed
from stages.llm.prompts import render_messages
from tests.fixtures.cli import cli


def test_each_split_is_written_with_the_prompts_rerec_renders(
    copy_of, monkeypatch, tmp_path
) -> None:
    out = tmp_path / "data"
    r = cli(copy_of, monkeypatch, "export", "queries", str(out))  # sft's prompt options
    assert r.exit_code == 0, r.output
    queries = copy_of.resolve("queries").read("queries")
    for split in ("train", "valid", "test"):
        got = pl.read_parquet(out / f"{split}.parquet")
        want = queries.filter(pl.col("split") == split).sort("query_id")
        assert got["query_id"].to_list() == want["query_id"].to_list()
        for row, prompt, completion, positives in zip(
            want.iter_rows(named=True), got["prompt"], got["completion"], got["positive_titles"],
            strict=True,
        ):  # fmt: skip
            assert prompt.to_list() == render_messages(
                row, candidate_facts="compact", named_facts=True
            )
            answer = parse_boxed(completion[0]["content"])
            assert completion[0]["role"] == "assistant" and answer == [positives[0]]
            ids, titles = row["candidate_item_ids"], row["candidate_titles"]
            assert positives.to_list() == [titles[ids.index(i)] for i in row["positive_item_ids"]]


def test_export_refuses_policy_options_and_a_used_folder(copy_of, monkeypatch, tmp_path) -> None:
    r = cli(copy_of, monkeypatch, "export", "queries", str(tmp_path / "a"), "--merged")
    assert r.exit_code == 2 and "for a policy" in r.stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep me")
    r = cli(copy_of, monkeypatch, "export", "queries", str(used))
    assert r.exit_code == 2 and "is not empty" in r.stderr
    assert (used / "mine.txt").read_text() == "keep me" and not list(Path(tmp_path).glob(".used*"))
    r = cli(copy_of, monkeypatch, "export", "graph", str(tmp_path / "g"))
    assert r.exit_code == 2 and "takes a policy or queries" in r.stderr
