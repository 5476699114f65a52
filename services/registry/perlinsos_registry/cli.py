"""Operator commands of the registry service (`perlinsos registry ...`) and the agency
bulk import (`perlinsos intake ...`)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perlinsos_registry import bulk
from perlinsos_registry.validation import normalise_nik
from perlinsos_shared.masking import mask_nik, mask_phone
from perlinsos_shared.operator import (
    bootstrap_servers,
    database_url,
    fail,
    operator_pool,
    operator_producer,
    operator_settings,
    with_pool,
)
from perlinsos_shared.settings import Settings

console = Console()

app = typer.Typer(help="Operator commands of the registry service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the registry service's own state."""


def _masked(value: Any, show: bool) -> Any:
    """Personal values in an audit change, masked on screen unless asked for."""
    if show or value is None:
        return value
    if isinstance(value, str) and value.startswith("+62"):
        return mask_phone(value)
    if isinstance(value, str) and value.isdigit() and len(value) == 16:
        return mask_nik(value)
    return value


_PERSONAL = {"nik", "full_name", "phone_e164", "address", "birth_date"}


def _change_text(changes: dict[str, Any], show: bool) -> str:
    parts = []
    for name, change in changes.items():
        old, new = (
            (change.get("old"), change.get("new")) if isinstance(change, dict) else (None, change)
        )
        if name in _PERSONAL and not show:
            new = _masked(new, False) if name in ("nik", "phone_e164") else "***"
            old = None if old is None else "***"
        parts.append(f"{name}: {json.dumps(old)} → {json.dumps(new, ensure_ascii=False)}")
    return "\n".join(parts)


async def _audit(pool: asyncpg.Pool, nik: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    changes = await pool.fetch(
        "SELECT a.at, a.agency, a.request_id, a.action, a.changes, a.participant_id"
        " FROM audit_log a JOIN participants p USING (participant_id)"
        " WHERE p.nik = $1 ORDER BY a.id",
        nik,
    )
    submissions = await pool.fetch(
        "SELECT received_at, agency, request_id, kind, outcome, reasons FROM submissions"
        " WHERE nik = $1 ORDER BY received_at, request_id",
        nik,
    )
    return changes, submissions


@app.command()
def audit(
    nik: str = typer.Argument(..., help="The participant's NIK (as submitted)."),
    show_nik: bool = typer.Option(
        False, "--show-nik", help="Show NIK, names and phones unmasked (personal data)."
    ),
) -> None:
    """Every change to one participant (who, under which request, when, what), and every
    submission that concerned the NIK, refusals included."""
    nik = normalise_nik(nik)
    who = nik if show_nik else mask_nik(nik)
    changes, submissions = with_pool("registry", lambda pool: _audit(pool, nik))
    if not changes and not submissions:
        fail(f"no participant or submission for NIK {who}", 1)
    table = Table(title=f"changes to participant {who}")
    for col in ("time", "agency", "request id", "action", "what changed"):
        table.add_column(col)
    for r in changes:
        table.add_row(
            r["at"].isoformat(timespec="seconds"),
            r["agency"],
            r["request_id"],
            r["action"],
            _change_text(r["changes"], show_nik),
        )
    console.print(table)
    subs = Table(title=f"submissions concerning {who}")
    for col in ("received", "agency", "request id", "kind", "outcome", "reasons"):
        subs.add_column(col)
    for r in submissions:
        reasons = r["reasons"] if isinstance(r["reasons"], list) else json.loads(r["reasons"])
        subs.add_row(
            r["received_at"].isoformat(timespec="seconds"),
            r["agency"],
            r["request_id"],
            r["kind"],
            r["outcome"],
            "; ".join(x["code"] for x in reasons),
        )
    console.print(subs)


# --- perlinsos intake ... ---------------------------------------------------------------

intake_app = typer.Typer(help="Agency intake tools (bulk CSV import).", no_args_is_help=True)


@intake_app.callback()
def _intake_root() -> None:
    """Send agency spreadsheets through registry.intake.v1, like any agency."""


@intake_app.command()
def template(
    path: Path = typer.Argument(
        Path("perlinsos-intake-template.csv"), help="Where to write the template."
    ),
) -> None:
    """Write the bulk-import template CSV (header and one example row)."""
    path.write_text(bulk.template_csv(), encoding="utf-8")
    console.print(f"template written to {path}")
    table = Table(title="columns")
    for col in ("column", "required", "meaning"):
        table.add_column(col)
    for name, required, meaning in bulk.COLUMNS:
        table.add_row(name, "yes" if required else "", meaning)
    console.print(table)


async def _outcomes(
    pool: asyncpg.Pool, agency: str, request_ids: list[str]
) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    try:
        rows = await pool.fetch(
            "SELECT request_id, outcome, reasons FROM submissions"
            " WHERE agency = $1 AND request_id = ANY($2::text[])",
            agency,
            request_ids,
        )
    except asyncpg.UndefinedTableError:
        rows = []
    return {
        r["request_id"]: (
            r["outcome"],
            r["reasons"] if isinstance(r["reasons"], list) else json.loads(r["reasons"]),
        )
        for r in rows
    }


async def run_import(
    settings: Settings,
    csv_text: str,
    file_stem: str,
    agency: str,
    timeout: float,
    progress: Progress | None = None,
    keys_dir: Path | None = None,
) -> list[bulk.RowOutcome]:
    """Publish every row, wait for every outcome (or the timeout), return them in row order."""
    rows = bulk.read_rows(csv_text)
    submissions = [
        bulk.row_to_submission(row, agency, i, file_stem) for i, row in enumerate(rows, start=2)
    ]
    request_ids = sorted({rid for rid, _ in submissions})
    # The database first: rows published with no way to read their outcomes help nobody.
    async with (
        operator_pool("registry", settings=settings) as pool,  # reads the outcomes
        operator_producer("perlinsos-intake-import", settings) as producer,
    ):
        task = progress.add_task("publishing", total=len(submissions)) if progress else None

        def sent(n: int) -> None:
            if progress is not None and task is not None:
                progress.advance(task, n)

        await bulk.publish_rows(producer, agency, submissions, sent, keys_dir)
        wait = progress.add_task("outcomes", total=len(request_ids)) if progress else None
        deadline = time.monotonic() + timeout
        found: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        while True:
            found = await _outcomes(pool, agency, request_ids)
            if progress is not None and wait is not None:
                progress.update(wait, completed=len(found))
            if len(found) >= len(request_ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
    # A row's outcome is committed with the batch that decided it (a NIK duplicate too),
    # so whatever is read here is final.
    out = []
    for row_number, (rid, _) in enumerate(submissions, start=2):
        if rid not in found:
            out.append(bulk.RowOutcome(row_number, rid, "pending", []))
            continue
        outcome, reasons = found[rid]
        status = "accepted" if outcome == "accepted" else "refused"
        out.append(bulk.RowOutcome(row_number, rid, status, reasons))
    return out


@intake_app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The agency's CSV file."),
    agency: str = typer.Option(..., "--agency", help="The agency's code, e.g. DISHUB."),
    timeout: float = typer.Option(120, help="Seconds to wait for every outcome."),
    keys: Path | None = typer.Option(
        None,
        "--keys",
        file_okay=False,
        help="The folder of the agency's signing keys (FOLDER/AGENCY/KEY-ID.pem);"
        " default: the state directory's, which `perlinsos up` makes for the demo agencies.",
    ),
) -> None:
    """Publish each row through registry.intake.v1 (as the agency), wait for the outcomes,
    and write FILE.result.csv beside the input."""
    settings = operator_settings()
    bootstrap_servers(settings)
    database_url(settings)
    agency = agency.strip().upper()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        text = file.read_text(encoding="utf-8-sig")
        outcomes = asyncio.run(
            run_import(settings, text, file.stem, agency, timeout, progress, keys)
        )
    target = bulk.result_path(file)
    bulk.write_results(target, outcomes)
    counts = {
        s: sum(1 for o in outcomes if o.status == s) for s in ("accepted", "refused", "pending")
    }
    console.print(
        f"{len(outcomes)} rows: {counts['accepted']} accepted, {counts['refused']} refused,"
        f" {counts['pending']} pending; results in {target}"
    )
    if counts["pending"]:
        raise typer.Exit(1)
