"""Which model a command means, without loading it (no torch import): a model artifact, a policy
with full weights, a local folder or a hub id; what identifies it in a version id; whether vLLM
is there. Cheap on purpose: a stage decides that its artifact already exists from these alone,
before it loads anything."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from schemas import ARTIFACTS
from stages.core.artifact import Artifact
from stages.core.errors import UserError
from stages.core.store import ArtifactStore


def resolve_model(store: ArtifactStore, ref: str) -> tuple[Artifact | None, str]:
    """A model artifact (its `model/` folder), a policy with full weights (`rerec sft`'s, to
    start RL from), a local folder, or a hub id."""
    name = ref.partition("@")[0]
    is_name = bool(name) and "/" not in name and name not in (".", "..")
    if is_name and (store.root / name).is_dir():
        art = store.resolve(ref)
        if art.manifest.kind == "policy":
            info = json.loads(art.file("policy.json").read_text())
            if info.get("adapter"):
                raise UserError(
                    f"{art.ref} is a LoRA adapter, not a model folder; start from a base model "
                    "or from a policy with full weights (rerec sft writes one)"
                )
        elif art.manifest.kind != "model":
            raise UserError(f"{art.ref} is a {art.manifest.kind} artifact, not a model")
        return art, str(art.file("model"))
    if is_name and name in ARTIFACTS:  # a model rerec fetches, not fetched yet: not a hub id
        art = store.resolve(ref, kind="model")  # says how to create it
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {path} has no config.json (not a transformers model)")
        return None, str(path.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise UserError(f"model {ref}: no such folder")
    return None, ref  # a hub id; loading says clearly if the hub is unreachable


def model_fingerprint(path: str) -> dict[str, Any]:
    """What identifies a model folder in the policy's version id (names, sizes, mtimes)."""
    folder = Path(path)
    if not folder.is_dir():
        return {"hub_id": path}
    return {
        "folder": str(folder),
        "files": sorted(
            (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir()
        ),
    }


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "--use-vllm needs vLLM, which is not installed: pip install 'rerec[gpu]' on a CUDA "
            "machine (vLLM has no CPU backend); without it, generation uses transformers"
        )
