"""Operator commands of the registry service (`perlinsos registry ...`)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Operator commands of the registry service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the registry service's own state."""
