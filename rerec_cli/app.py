"""The Typer app, its global options, and how errors reach the user.

A `UserError` raised anywhere in a stage is printed as one line on stderr with exit code 2;
`--debug` shows the traceback instead. So are the command line's own mistakes (an unknown
command or option, `--limit abc`), a workdir that cannot be one (a file) and a write the system
refuses (permission denied, read-only or full disk). Ctrl-C prints `error: interrupted` (exit
130), SIGTERM `error: terminated` (exit 143, see `rerec_cli.main`). Anything else is a bug: one
line, exit code 1, and the traceback with `--debug`.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from rerec_cli.main import Terminated
from stages.core.errors import UserError
from stages.core.store import ArtifactStore


def check_workdir(workdir: Path) -> None:
    """Refuse a workdir that cannot be a folder: a file, or a path through a file."""
    path = workdir.expanduser().absolute()
    for where in (path, *path.parents):
        if where.is_dir():
            return
        if where.exists():
            if where == path:
                raise UserError(f"workdir {path} is a file, not a folder")
            raise UserError(f"workdir {path}: {where} is a file, not a folder")
        if where.is_symlink():
            what = "" if where == path else f": {where}"
            raise UserError(f"workdir {path}{what} is a broken symlink")


@dataclass
class State:
    workdir: Path = field(default_factory=lambda: Path(os.environ.get("REREC_WORKDIR", "workdir")))
    debug: bool = False

    @property
    def store(self) -> ArtifactStore:
        check_workdir(self.workdir)
        return ArtifactStore(self.workdir)


state = State()


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def os_error_message(exc: OSError) -> str | None:
    """One line for an OSError the user can fix (permissions, a read-only or full disk);
    None for any other (a bug)."""
    path = exc.filename
    if isinstance(exc, PermissionError):
        if path is None:
            return "permission denied"
        target = Path(os.fsdecode(path))
        if target.exists() and not os.access(target, os.R_OK):
            return f"cannot read {target}: permission denied"
        while not target.exists() and target != target.parent:  # name the folder to fix
            target = target.parent
        return f"cannot write to {target}: permission denied"
    reasons = {
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
    }
    if exc.errno in reasons:
        where = f" {os.fsdecode(path)}" if path is not None else ""
        return f"cannot write{' to' if where else ''}{where}: {reasons[exc.errno]}"
    return None


_PARSE_ERRORS = {"int": "is not a valid integer", "float": "is not a valid number"}
_PARSE_ERRORS["bool"] = "is not a valid boolean (use true/false, yes/no, 1/0)"


def usage_message(exc: typer.TyperException) -> str:
    """Click's message for a command-line mistake, as one line without the rich box:
    ``rerec eval: invalid value for '--limit': 'abc' is not a valid integer``."""
    message = exc.format_message()
    cause = exc.__cause__
    if isinstance(exc, typer.BadParameter) and hasattr(cause, "errors"):
        # Typer checks option values with pydantic: say which value, in plain words.
        err = cause.errors()[0]
        value, kind = err.get("input"), str(err.get("type", ""))
        reason = _PARSE_ERRORS.get(kind.split("_")[0]) if kind.endswith("_parsing") else None
        if reason is None:
            text = str(err.get("msg", "")).removeprefix("Input ").removeprefix("Value error, ")
            reason = text if text.startswith("should") else f"is invalid: {text}"
        head = message.split(": ", 1)[0] if ": " in message else "invalid value"
        message = f"{head}: {value!r} {reason}"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    message = "; ".join(lines) or type(exc).__name__
    message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        return f"{ctx.command_path}: {message.rstrip('.')} (see {ctx.command_path} --help)"
    return message.rstrip(".")


_typer_display_type = TyperOption.display_type_rich


def _display_type(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so its help shows none (Typer 0.29 prints `--force <bool>`)."""
    return None if self.is_flag and self.metavar is None else _typer_display_type(self, ctx)


TyperOption.display_type_rich = _display_type  # type: ignore[method-assign]

# Global options also accepted after the subcommand (`rerec eval ... --workdir W --debug`).
_GLOBAL_VALUE = ("--workdir", "-w")
_GLOBAL_FLAG = ("--debug",)


def hoist_global_options(args: list[str]) -> list[str]:
    """Move `--workdir W` / `-w W` / `--workdir=W` / `--debug` given after the subcommand to the
    front, where the group parses them (click reads group options before the command name
    only). Everything after a `--` is left alone."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in _GLOBAL_FLAG:
            front.append(arg)
        elif arg in _GLOBAL_VALUE and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        elif arg.startswith("--workdir="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class RerecGroup(TyperGroup):
    """Turns exceptions into one-line messages and exit codes."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's main without its boxes: a command-line mistake is one line, exit 2."""
        args = hoist_global_options(list(sys.argv[1:] if args is None else args))
        try:
            code = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.TyperException as exc:  # click's errors: a command-line mistake
            if type(exc).__name__ != "NoArgsIsHelpError":  # (that one printed the help)
                typer.echo(f"error: {usage_message(exc)}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = 1
        except Terminated:
            typer.echo("error: terminated", err=True)
            code = 143
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            code = 130
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            super().invoke(ctx)
            return None  # a command's return value is not an exit code (see `main`)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise
        except UserError as exc:
            if state.debug:
                raise
            _fail(str(exc), 2)
        except Terminated:  # SIGTERM, handled like Ctrl-C: writes in progress are removed
            if state.debug:
                raise
            _fail("terminated", 143)
        except KeyboardInterrupt:
            if state.debug:
                raise
            _fail("interrupted", 130)
        except OSError as exc:
            message = os_error_message(exc)
            if state.debug:
                raise
            if message is not None:
                _fail(message, 2)
            _internal_error(exc)
        except Exception as exc:  # a bug in rerec: keep the message short, offer --debug
            if state.debug:
                raise
            _internal_error(exc)


def _internal_error(exc: Exception) -> None:
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


def _print_version(value: bool) -> None:
    if value:
        from stages.core.version import code_version

        typer.echo(f"rerec {code_version()}")
        raise typer.Exit()


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
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version (with the git commit of a source checkout) and exit.",
        ),
    ] = False,
) -> None:
    state.workdir = workdir
    state.debug = debug


def command_line() -> str:
    """The command as the user typed it, recorded in manifests."""
    import shlex

    return shlex.join(["rerec", *sys.argv[1:]])
