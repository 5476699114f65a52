"""Operator commands of the premium service (`perlinsos premium ...`)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Operator commands of the premium service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the premium service's own state."""


finance_app = typer.Typer(help="Finance exports (CSV, XLSX).", no_args_is_help=True)


@finance_app.callback()
def _finance_root() -> None:
    """Monthly premium liabilities per funding line, for BPKAD / Disnaker finance."""
