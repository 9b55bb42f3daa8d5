"""The torch device a run uses, for every stage that runs a model (LightGCN, sft, train, eval)."""

from __future__ import annotations

import torch

from stages.core.errors import UserError


def pick_device(name: str) -> str:
    """``auto``: cuda where torch sees a GPU, else cpu; otherwise any torch device name (``cpu``,
    ``cuda``, ``cuda:1``). A name torch does not know, or cuda on a machine where torch sees no
    GPU, is a user error (one line, before anything is loaded)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to torch on this machine")
    return name
