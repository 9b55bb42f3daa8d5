"""Console for results on stdout. Rich would wrap tables to 80 columns when stdout is a pipe
or a file; results are read there too (CI logs, `| less`), so give them room."""

from __future__ import annotations

import sys

from rich.console import Console

out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
