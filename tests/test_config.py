"""Config precedence: defaults < YAML file < command-line options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import Field

from stages.core.config import StageConfig, resolve_config
from stages.core.errors import UserError


class ToyConfig(StageConfig):
    epochs: int = Field(default=3, gt=0, description="passes over the data")
    lr: float = Field(default=1e-3, description="learning rate")
    name: str = Field(default="toy", description="run name")


def test_defaults_then_yaml_then_options(tmp_path: Path) -> None:
    assert resolve_config(ToyConfig, section="train") == ToyConfig()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\nlr: 0.5\n")
    from_file = resolve_config(ToyConfig, section="train", config_file=cfg_file)
    assert (from_file.epochs, from_file.lr, from_file.name) == (7, 0.5, "toy")
    both = resolve_config(
        ToyConfig, section="train", config_file=cfg_file, overrides={"lr": 0.1, "name": None}
    )
    assert (both.epochs, both.lr, both.name) == (7, 0.1, "toy")


def test_pipeline_file_takes_the_stage_section(tmp_path: Path) -> None:
    cfg_file = tmp_path / "pipeline.yaml"
    cfg_file.write_text("train:\n  epochs: 9\nbuild-graph:\n  epochs: 1\n")
    assert resolve_config(ToyConfig, section="train", config_file=cfg_file).epochs == 9
    assert resolve_config(ToyConfig, section="eval", config_file=cfg_file).epochs == 3


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("epochz: 2\n", {}, r"train config \(.*c.yaml\): epochz: unknown option"),
        ("epochs: -1\n", {}, r"epochs: Input should be greater than 0"),
        ("epochs: [1\n", {}, r"not valid YAML at line"),
        ("- 1\n- 2\n", {}, r"expected a mapping"),
        ("", {"epochs": "many"}, r"train config \(command line\): epochs"),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path, text: str, overrides: dict, message: str
) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        resolve_config(ToyConfig, section="train", config_file=cfg_file, overrides=overrides)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        resolve_config(ToyConfig, section="train", config_file=tmp_path / "nope.yaml")


CONFIGS = Path(__file__).parent.parent / "configs"
PRESETS = sorted([*(CONFIGS / "presets").glob("*.yaml"), *(CONFIGS / "models").glob("*.yaml")])


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_shipped_presets_are_valid_configs_of_their_stages(preset: Path) -> None:
    """Every section of a shipped preset is read by its stage's config class as it is: no field
    unknown, no value out of range (the GPU runs cannot be tried here, their configs can)."""
    import yaml

    from stages.eval.config import EvalConfig
    from stages.rl.config import TrainConfig
    from stages.sft.config import SFTConfig

    classes = {"sft": SFTConfig, "train": TrainConfig, "eval": EvalConfig}
    sections = yaml.safe_load(preset.read_text())
    assert sections and set(sections) <= set(classes)
    for section, values in sections.items():
        cfg = resolve_config(classes[section], section=section, config_file=preset)
        assert {k: getattr(cfg, k) for k in values} == values
        if section == "train":  # the step's completions split into micro-batches on one GPU
            from stages.rl.stage import batch_layout

            batch_layout(cfg, world=1)


# ------------------------------------------------------------------ trl: / peft: pass-through
def test_trl_and_peft_pass_through_reach_the_configs(tmp_path: Path) -> None:
    from stages.llm.lora import lora_config
    from stages.rl.config import TrainConfig
    from stages.rl.stage import grpo_args

    path = tmp_path / "train.yaml"
    path.write_text(
        "train:\n  trl:\n    lr_scheduler_type: cosine\n  peft:\n    use_rslora: true\n"
    )
    cfg = resolve_config(
        TrainConfig, section="train", config_file=path, overrides={"model": "m", "steps": 1}
    )
    args = grpo_args(cfg, tmp_path, steps=1, micro=5, accumulation=1, device="cpu", weights=[1.0])
    assert args.lr_scheduler_type == "cosine"
    assert lora_config(cfg).use_rslora is True


@pytest.mark.parametrize(
    ("trl", "message"),
    [
        ({"learning_rate": 1.0}, r"--trl learning_rate: rerec sets it from --lr"),
        (
            {"lr_schedular_type": "cosine"},
            r"not a field of GRPOConfig \(did you mean lr_scheduler_type\?\)",
        ),
    ],
)
def test_trl_keys_are_checked(tmp_path: Path, trl: dict, message: str) -> None:
    from stages.rl.config import TrainConfig
    from stages.rl.stage import grpo_args

    cfg = TrainConfig(model="m", steps=1, trl=trl)
    with pytest.raises(UserError, match=message):
        grpo_args(cfg, tmp_path, steps=1, micro=5, accumulation=1, device="cpu", weights=[1.0])


@pytest.mark.parametrize("stage", ["train", "sft"])
def test_activation_checkpointing_on_cuda_under_this_transformers_name(tmp_path, stage) -> None:
    """transformers 5.17 (the lowest pinned; `make test-lowest` runs this on it) knows only
    ``gradient_checkpointing``, newer ones also ``activation_checkpointing``. Setting the name
    5.17 lacks made every CUDA run fail at start (seen on a lent H200). The trainer configs are
    built as for a CUDA run (on) and a CPU one (off), and ``--trl`` takes either name."""
    from stages.core.extra_args import checkpointing_field

    if stage == "train":
        from trl import GRPOConfig as cls

        from stages.rl.config import TrainConfig
        from stages.rl.stage import grpo_args

        def build(device: str, trl: dict):
            cfg = TrainConfig(model="m", steps=1, trl=trl)
            return grpo_args(cfg, tmp_path, steps=1, micro=5, accumulation=1, device=device,
                             weights=[1.0])  # fmt: skip
    else:
        from trl import SFTConfig as cls

        from stages.sft.config import SFTConfig
        from stages.sft.stage import sft_args

        def build(device: str, trl: dict):
            return sft_args(SFTConfig(steps=1, trl=trl), str(tmp_path), 1, device, False)

    field = checkpointing_field(cls)
    assert field in {f.name for f in dataclasses.fields(cls)}
    assert build("cuda", {}).gradient_checkpointing is True  # the name every release reads
    assert getattr(build("cuda", {}), field) is True
    assert build("cpu", {}).gradient_checkpointing is False
    for name in ("gradient_checkpointing", "activation_checkpointing"):
        off = build("cuda", {name: False})
        assert off.gradient_checkpointing is False and getattr(off, field) is False
    both = {"gradient_checkpointing": True, "activation_checkpointing": True}
    with pytest.raises(UserError, match="one setting by two names"):
        build("cuda", both)


def test_pass_through_flags_parse_typed_values() -> None:
    from stages.core.extra_args import key_values

    assert key_values(["warmup_steps=10", "lr_scheduler_type=cosine", "x=[1, 2]"], "trl") == {
        "warmup_steps": 10,
        "lr_scheduler_type": "cosine",
        "x": [1, 2],
    }
    with pytest.raises(UserError, match="write it as KEY=VALUE"):
        key_values(["warmup_steps"], "trl")


def test_empty_sections_and_trackers_leave_the_version_id_alone() -> None:
    from stages.core.manifest import version_id

    base = {"lr": 0.1}
    same = version_id("x", 1, base, [])
    assert version_id("x", 1, {**base, "trl": {}, "peft": {}, "report_to": ["wandb"]}, []) == same
    assert version_id("x", 1, {**base, "trl": {"warmup_steps": 3}}, []) != same
