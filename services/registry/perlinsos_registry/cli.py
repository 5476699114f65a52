"""Operator commands of the registry service (`perlinsos registry ...`)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Operator commands of the registry service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the registry service's own state."""


intake_app = typer.Typer(help="Agency intake tools (bulk CSV import).", no_args_is_help=True)


@intake_app.callback()
def _intake_root() -> None:
    """Send agency spreadsheets through registry.intake.v1, like any agency."""
