"""Operator commands of the notify service (`perlinsos notify ...`)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Operator commands of the notify service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the notify service's own state."""
