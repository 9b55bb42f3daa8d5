"""One CLI grammar: every config field is an option, flags are plain flags, global options go
anywhere, a YAML file may use the flag spelling, `--config FILE` reaches a real command."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer

from rerec_cli.app import app, hoist_global_options
from stages.cf.config import PretrainCFConfig
from stages.core.config import StageConfig, resolve_config
from stages.core.errors import UserError
from stages.eval.config import EvalConfig
from stages.fetch.config import FetchConfig
from stages.graph.config import BuildGraphConfig
from stages.queries.config import MakeQueriesConfig
from stages.rl.config import TrainConfig
from stages.sft.config import SFTConfig

STAGE_COMMANDS: dict[str, type[StageConfig]] = {
    "fetch": FetchConfig,
    "build-graph": BuildGraphConfig,
    "pretrain-cf": PretrainCFConfig,
    "make-queries": MakeQueriesConfig,
    "sft": SFTConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def commands() -> dict[str, typing.Any]:
    group = typer.main.get_command(app)
    found: dict[str, typing.Any] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        found[name] = command
        if hasattr(command, "commands"):  # a group (`artifacts`)
            found |= {f"{name} {sub}": c for sub, c in command.commands.items()}
    return found


@pytest.mark.parametrize("name", sorted(STAGE_COMMANDS))
def test_every_config_field_is_an_option(name: str) -> None:
    params = {p.name for p in commands()[name].params}
    missing = set(STAGE_COMMANDS[name].model_fields) - params
    assert not missing, f"rerec {name} has no option for {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_has_help(rerec, name: str) -> None:
    result = rerec(*name.split(), "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout, result.stderr


def test_force_is_a_plain_flag(rerec) -> None:
    help_text = rerec("pretrain-cf", "--help").stdout
    force = next(line for line in help_text.splitlines() if "--force" in line)
    assert "<bool>" not in force
    assert rerec("pretrain-cf", "--force", "true").exit_code == 2  # a flag takes no value


def test_fields_without_a_hand_written_flag_are_reachable(rerec, tmp_path: Path) -> None:
    # lora_alpha had no flag before the options were generated from the config class
    help_text = rerec("train", "--help").stdout
    for flag in ("--lora-alpha", "--lora-dropout", "--epsilon", "--w-format", "--min-keep"):
        assert flag in help_text
    bad = rerec("train", "--lora-alpha", "0")
    assert bad.exit_code == 2 and "lora_alpha" in bad.stderr


def test_global_options_after_the_subcommand(rerec, tmp_path: Path) -> None:
    assert hoist_global_options(["eval", "--limit", "3", "-w", "W", "--debug"]) == [
        "-w", "W", "--debug", "eval", "--limit", "3",
    ]  # fmt: skip
    assert hoist_global_options(["recommend", "--", "--debug"]) == ["recommend", "--", "--debug"]
    other = tmp_path / "elsewhere"
    result = rerec("artifacts", "list", "--workdir", str(other))
    assert result.exit_code == 0 and str(other) in result.stdout + result.stderr


def test_yaml_takes_the_flag_spelling(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("max-new-tokens: 7\ncandidate-facts: compact\n")
    cfg = resolve_config(EvalConfig, section="eval", config_file=path)
    assert cfg.max_new_tokens == 7 and cfg.candidate_facts == "compact"
    path.write_text("max-new-tokens: 7\nmax_new_tokens: 8\n")
    with pytest.raises(UserError, match="given twice"):
        resolve_config(EvalConfig, section="eval", config_file=path)


def test_config_file_through_a_real_command(rerec, tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("pretrain-cf:\n  embeding_dim: 8\n")  # a typo, in the command's section
    result = rerec("pretrain-cf", "--config", str(path))
    assert result.exit_code == 2
    assert "embeding_dim: unknown option" in result.stderr and str(path) in result.stderr
    assert result.stderr.count("\n") == 1
