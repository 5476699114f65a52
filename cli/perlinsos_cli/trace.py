"""`perlinsos trace`: print one enrolment's trace as a tree (embedded trace store)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Follow one enrolment through every service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Traces from the embedded trace store under the state directory."""
