"""The Typer app, its global options, and how errors reach the user.

A `UserError` raised anywhere in a stage is printed as one line on stderr with exit code 2;
`--debug` shows the traceback instead. Anything else is a bug: one line, exit code 1, and the
traceback with `--debug`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from stages.errors import UserError
from stages.store import ArtifactStore


@dataclass
class State:
    workdir: Path = field(default_factory=lambda: Path(os.environ.get("REREC_WORKDIR", "workdir")))
    debug: bool = False

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.workdir)


state = State()


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class RerecGroup(TyperGroup):
    """Turns exceptions into one-line messages and exit codes."""

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise
        except UserError as exc:
            if state.debug:
                raise
            _fail(str(exc), 2)
        except KeyboardInterrupt:
            if state.debug:
                raise
            _fail("interrupted", 130)
        except Exception as exc:  # a bug in rerec: keep the message short, offer --debug
            if state.debug:
                raise
            first = (str(exc).splitlines() or [""])[0]
            _fail(
                f"internal error: {type(exc).__name__}: {first} "
                "(rerun with --debug for the traceback, and please report it)",
                1,
            )


app = typer.Typer(
    cls=RerecGroup,
    name="rerec",
    help="ReRec: train small LLMs into recommendation assistants with reinforcement "
    "fine-tuning. Stages talk only through versioned artifacts in a workdir.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main_options(
    workdir: Annotated[
        Path,
        typer.Option(
            "--workdir",
            "-w",
            envvar="REREC_WORKDIR",
            help="Artifact store to read and write.",
            show_default=True,
        ),
    ] = Path("workdir"),
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    state.workdir = workdir
    state.debug = debug


def command_line() -> str:
    """The command as the user typed it, recorded in manifests."""
    import shlex

    return shlex.join(["rerec", *sys.argv[1:]])
