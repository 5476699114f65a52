"""Operator commands of the premium service (`perlinsos premium ...`)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Operator commands of the premium service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the premium service's own state."""
