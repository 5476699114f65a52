"""Operator commands of the eligibility service (`perlinsos eligibility ...`)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Operator commands of the eligibility service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the eligibility service's own state."""
