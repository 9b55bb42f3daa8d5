"""`rerec status`: which artifacts are stale against the latest versions of their inputs."""

from __future__ import annotations

from typing import Annotated

import typer

from rerec_cli.app import app, state
from rerec_cli.output import JSON_HELP, out, print_json


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List artifacts whose latest version was built from inputs that have a newer latest
    version since, with the command that rebuilds each (in the order to run them)."""
    from stages.core.housekeeping import stale

    found = stale(state.store)
    if as_json:
        print_json([{"artifact": s.ref, "inputs": s.inputs, "command": s.command} for s in found])
        return
    if not found:
        out.print(f"up to date: every artifact in {state.store.root} reads its inputs' latest")
        return
    for s in found:
        out.print(f"[bold]{s.ref}[/bold] is stale: built from {', '.join(s.inputs)}")
    out.print("rebuild, in this order:")
    for s in found:
        out.print(f"  {s.command}", markup=False)
