"""One way to give a command its options: every field of the stage's config class becomes an
option, generated from the class, so a field cannot lack a flag and a flag cannot drift from its
field (type, help and default come from the field).

    @app.command("pretrain-cf")
    @config_options(PretrainCFConfig, "pretrain-cf", flags={"split": ("--cf-split", "--split")})
    def pretrain_cf_command(cfg: PretrainCFConfig, force: ... = False) -> None: ...

The command receives the resolved config (defaults < `--config FILE` < options given) as
``cfg``. A field the command declares itself (a repeatable `--column OURS=THEIRS` that becomes a
mapping) keeps the command's declaration and goes through ``parsers`` into the config.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer

from stages.core.config import StageConfig, field_help, resolve_config
from stages.core.extra_args import key_values

CONFIG_PARAM = "config"
_SCALARS = (bool, int, float, str, Path)


def _strip(annotation: Any) -> Any:
    """``Optional[Annotated[X, ...]]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def option_type(annotation: Any) -> tuple[Any, str | None]:
    """The type Typer parses a field as, and a metavar naming a Literal's choices (the config
    class validates the value and says what is allowed). None where a field has no plain
    command-line form (a mapping): the command must declare that option itself."""
    annotation = _strip(annotation)
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), "|".join(str(c) for c in choices)
    if get_origin(annotation) is list:
        inner, metavar = option_type(get_args(annotation)[0])
        return (None, None) if inner is None else (list[inner], metavar)
    if annotation in _SCALARS:
        return annotation, None
    return None, None


def flag_names(name: str) -> tuple[str, ...]:
    return (f"--{name.replace('_', '-')}",)


def field_parameter(
    cls: type[StageConfig], name: str, flags: Sequence[str] | None = None
) -> inspect.Parameter:
    """The keyword parameter (default None: "not given") that makes field ``name`` an option."""
    kind, metavar = option_type(cls.model_fields[name].annotation)
    if kind is None:
        raise TypeError(
            f"{cls.__name__}.{name} has no plain command-line form; declare its option in the "
            "command and give a parser"
        )
    decls = tuple(flags) if flags else flag_names(name)
    if kind is bool and not any("/" in d for d in decls):  # a YAML true can be turned off
        long = next(d for d in decls if d.startswith("--"))
        decls = (f"{long}/--no-{long.removeprefix('--')}", *(d for d in decls if d != long))
    option = typer.Option(*decls, help=field_help(cls, name), metavar=metavar, show_default=False)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


def config_options(
    cls: type[StageConfig],
    section: str,
    *,
    flags: Mapping[str, Sequence[str]] | None = None,
    parsers: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command whose first parameter is ``cfg``: see the module docstring.
    ``flags`` renames a field's option (``{"families": ("--family",)}``)."""
    flags = dict(flags or {})
    parsers = dict(parsers or {})
    fields = list(cls.model_fields)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(fn, eval_str=True).parameters
        if "cfg" not in own:
            raise TypeError(f"{fn.__name__} must take the resolved config as `cfg`")
        declared = {n: p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own.items()}
        generated = {n: field_parameter(cls, n, flags.get(n)) for n in fields if n not in declared}
        in_class = [generated.get(n) or declared[n] for n in fields]
        config_file = inspect.Parameter(
            CONFIG_PARAM,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(
                    "--config", "-c", help=f"YAML file of options (its '{section}' section)."
                ),
            ],
        )
        rest = [p for n, p in declared.items() if n not in cls.model_fields and n != "cfg"]
        params = [*in_class, config_file, *rest]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in fields}
            for n, parse in parsers.items():
                given[n] = parse(given[n])
            cfg = resolve_config(
                cls, section=section, config_file=kwargs.pop(CONFIG_PARAM), overrides=given
            )
            return fn(cfg=cfg, **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


# `--trl KEY=VALUE` / `--peft KEY=VALUE` (repeatable): the sft and train configs' pass-through
# mappings (see stages.core.extra_args)
TrlOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="KEY=VALUE",
        help="a field of TRL's trainer config that rerec does not set from its own options, "
        "repeatable: --trl lr_scheduler_type=cosine [config: trl]",
    ),
]
PeftOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="KEY=VALUE",
        help="a field of PEFT's LoraConfig that rerec does not set, repeatable: "
        "--peft use_rslora=true [config: peft]",
    ),
]
PASS_THROUGH: dict[str, Callable[[Any], Any]] = {
    "trl": lambda pairs: key_values(pairs, "trl"),
    "peft": lambda pairs: key_values(pairs, "peft"),
}
