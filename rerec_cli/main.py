"""Entry point of the `rerec` console script: the app with every command registered."""

from __future__ import annotations

from rerec_cli import build_graph as _build_graph  # noqa: F401  (registers build-graph)
from rerec_cli import eval as _eval  # noqa: F401  (registers eval)
from rerec_cli import fetch as _fetch  # noqa: F401  (registers `rerec fetch`)
from rerec_cli import make_queries as _make_queries  # noqa: F401  (registers make-queries)
from rerec_cli import pretrain_cf as _pretrain_cf  # noqa: F401  (registers pretrain-cf)
from rerec_cli import recommend as _recommend  # noqa: F401  (registers recommend)
from rerec_cli import report as _report  # noqa: F401  (registers report)
from rerec_cli import train as _train  # noqa: F401  (registers train)
from rerec_cli.app import app
from rerec_cli.artifacts import artifacts_app

app.add_typer(artifacts_app, name="artifacts")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
