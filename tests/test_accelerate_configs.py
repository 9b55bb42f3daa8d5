"""The shipped accelerate configs load as accelerate reads them; the DeepSpeed ones also make
the ZeRO plugin they promise (where the deepspeed extra is installed: it builds from source
against the installed torch, see README "Several GPUs / machines")."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_reads_each_shipped_config(path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 2 and cfg.num_machines == 1
    if path.name.startswith("zero"):
        assert str(cfg.distributed_type).endswith("DEEPSPEED")
        assert cfg.deepspeed_config["zero_stage"] == int(path.stem.removeprefix("zero"))
        assert cfg.mixed_precision == "bf16"
    elif path.name == "cpu-ddp.yaml":
        assert cfg.use_cpu and str(cfg.distributed_type).endswith("MULTI_CPU")
    else:
        assert str(cfg.distributed_type).endswith("MULTI_GPU")


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if p.name.startswith("zero")], ids=lambda p: p.name
)
def test_zero_configs_make_their_deepspeed_plugin(path: Path) -> None:
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    ds = load_config_from_file(str(path)).deepspeed_config
    plugin = DeepSpeedPlugin(
        zero_stage=ds["zero_stage"],
        offload_optimizer_device=ds["offload_optimizer_device"],
        offload_param_device=ds["offload_param_device"],
        zero3_init_flag=ds["zero3_init_flag"],
    )
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == ds["zero_stage"]
