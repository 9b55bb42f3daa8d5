"""Entry point of the `rerec` console script: the app with every command registered.

Nothing heavy is imported at module level: the commands (typer, rich, polars, pydantic) load
inside `main()`, so a Ctrl-C or SIGTERM during start-up ends with one line like any other,
not a traceback. `app` (all commands registered) is imported on first use.
"""

from __future__ import annotations

import signal
import sys
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM. Raised like Ctrl-C's KeyboardInterrupt, so that the same clean-ups run (a write
    in progress is removed, training saves a checkpoint); reported as `error: terminated`."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def _register() -> Any:
    from rerec_cli import build_graph as _build_graph  # noqa: F401  (registers build-graph)
    from rerec_cli import eval as _eval  # noqa: F401  (registers eval)
    from rerec_cli import export as _export  # noqa: F401  (registers export)
    from rerec_cli import fetch as _fetch  # noqa: F401  (registers `rerec fetch`)
    from rerec_cli import make_queries as _make_queries  # noqa: F401  (registers make-queries)
    from rerec_cli import pretrain_cf as _pretrain_cf  # noqa: F401  (registers pretrain-cf)
    from rerec_cli import recommend as _recommend  # noqa: F401  (registers recommend)
    from rerec_cli import report as _report  # noqa: F401  (registers report)
    from rerec_cli import sft as _sft  # noqa: F401  (registers sft)
    from rerec_cli import status as _status  # noqa: F401  (registers status)
    from rerec_cli import train as _train  # noqa: F401  (registers train)
    from rerec_cli.app import app
    from rerec_cli.artifacts import artifacts_app

    if not any(group.typer_instance is artifacts_app for group in app.registered_groups):
        app.add_typer(artifacts_app, name="artifacts")
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from rerec_cli.main import app`: the app with every command
        return _register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _register()()
    except Terminated:  # before the app runs (the app reports its own)
        if debug:
            raise
        print("error: terminated", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # `python -m rerec_cli.main`: use the importable module's classes
    from rerec_cli.main import main as _main

    _main()
