"""Consoles: results on stdout, messages on stderr, and `--json` output.

Results go to `out`, on stdout. Rich would wrap tables to 80 columns when stdout is a pipe
or a file; results are read there too (CI logs, `| less`), so give them room."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)

JSON_HELP = "Print the result as JSON on stdout (human-readable text goes to stderr)."


def print_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
