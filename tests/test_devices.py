"""One rule for --device across stages (`stages.core.devices.pick_device`)."""

from __future__ import annotations

import pytest
import torch

from stages.core.devices import pick_device
from stages.core.errors import UserError


def test_auto_and_named_devices() -> None:
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


@pytest.mark.parametrize("name", ["tpu9", "gpu", ""])
def test_a_name_torch_does_not_know_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match="is not a torch device"):
        pick_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        pick_device(name)
