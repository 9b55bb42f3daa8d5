"""Typed stage configs and their precedence: defaults < YAML file (``--config``) < options.

Every stage has one pydantic model whose fields carry defaults and help text; the CLI shows that
help and the resolved model is written into the artifact's manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from stages.core.errors import UserError

# Section names a pipeline-wide YAML file may use, one per command.
PIPELINE_SECTIONS = frozenset(
    {
        "fetch",
        "build-graph",
        "pretrain-cf",
        "make-queries",
        "sft",
        "train",
        "eval",
        "report",
        "recommend",
    }
)


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


C = TypeVar("C", bound=StageConfig)


def field_help(cls: type[StageConfig], name: str) -> str:
    """The help text of one config field, for the CLI option that sets it."""
    info = cls.model_fields[name]
    default = info.default
    text = info.description or ""
    if default is not None and not isinstance(default, (list, dict)) and default != "":
        text += f" [config: {name}; default: {default}]"
    else:
        text += f" [config: {name}]"
    # The CLI renders help with rich markup: brackets must not be read as tags.
    return text.replace("[", "\\[")


def read_yaml_section(path: Path, section: str) -> dict[str, Any]:
    """Read a YAML config. A file may hold one stage's options at the top level, or a mapping
    per stage (``build-graph: {...}``) so one file drives a whole pipeline."""
    if path.is_dir():
        raise UserError(f"config file {path} is a folder, not a YAML file")
    if not path.exists():
        raise UserError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"config file {path} is a binary file, not YAML (not UTF-8 text at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise UserError(f"config file {path}: cannot read it ({exc.strerror})") from None
    if "\x00" in text:
        raise UserError(f"config file {path} is a binary file, not YAML")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping of options at the top level")
    if any(key in PIPELINE_SECTIONS for key in data):
        section_values = data.get(section) or {}
        if not isinstance(section_values, dict):
            raise UserError(f"config file {path}: section '{section}' must be a mapping")
        return dict(section_values)
    return data


def field_names(cls: type[StageConfig], values: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """YAML keys as field names: the flag spelling (`max-new-tokens`) is accepted too."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key)
        if name not in cls.model_fields and name.replace("-", "_") in cls.model_fields:
            name = name.replace("-", "_")
        if name in out:
            raise UserError(f"config file {path}: '{name}' is given twice ({key!r} and {name!r})")
        out[name] = value
    return out


def resolve_config(
    cls: type[C],
    *,
    section: str,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from its defaults, then the YAML file, then the options that were given
    (``None`` means "not given")."""
    values: dict[str, Any] = {}
    source = "defaults"
    if config_file is not None:
        values.update(field_names(cls, read_yaml_section(config_file, section), config_file))
        source = str(config_file)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(given)
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        origin = "command line" if err["loc"] and err["loc"][0] in given else source
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across several options
            raise UserError(f"{section}: {msg}") from None
        if err["type"] == "extra_forbidden":
            known = ", ".join(cls.model_fields)
            msg = f"unknown option (known: {known})"
        raise UserError(f"{section} config ({origin}): {loc}: {msg}") from None
