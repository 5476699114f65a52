"""Operator commands of the notify service (`perlinsos notify ...`)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.masking import mask_nik, mask_phone, pseudonym
from perlinsos_shared.operator import database_url, fail, open_operator_pool, with_pool

app = typer.Typer(help="Operator commands of the notify service.", no_args_is_help=True)
console = Console()


@app.callback()
def _root() -> None:
    """Commands that read or act on the notify service's own state."""


MESSAGES_SQL = (
    "SELECT message_id, participant_id, decision_id, template, phone_e164, status, attempts,"
    " provider, provider_message_id, provider_status, segments, error_code, last_error,"
    " reconciled, nik_masked, created_at, accepted_at, updated_at FROM messages"
)


async def find_messages(database_url: str, who: str) -> list[dict[str, Any]]:
    """Messages of one participant: by NIK (16 digits) or by participant id."""
    pool = await open_operator_pool("notify", database_url, migrate=True, size=1)
    try:
        if len(who) == 16 and who.isdigit():
            rows = await pool.fetch(
                MESSAGES_SQL + " WHERE nik_hash = $1 ORDER BY created_at", pseudonym(who)
            )
        else:
            rows = await pool.fetch(
                MESSAGES_SQL + " WHERE participant_id = $1 ORDER BY created_at", who
            )
        out = [dict(r) for r in rows]
        if out:
            attempts = await pool.fetch(
                "SELECT message_id, attempt, outcome, http_status, error, reconciled, at"
                " FROM message_attempts WHERE message_id = ANY($1::text[]) ORDER BY id",
                [r["message_id"] for r in out],
            )
            for r in out:
                r["history"] = [dict(a) for a in attempts if a["message_id"] == r["message_id"]]
        return out
    finally:
        await pool.close()


def _when(value: Any) -> str:
    return value.astimezone(BATAM_TZ).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@app.command()
def status(
    who: str = typer.Argument(..., help="The participant's NIK (16 digits) or participant id."),
) -> None:
    """Every SMS for one participant: what was sent, when, and what the provider said."""
    who = who.strip()
    rows = asyncio.run(find_messages(database_url(), who))
    shown = mask_nik(who) if len(who) == 16 and who.isdigit() else who
    if not rows:
        fail(f"no SMS recorded for {shown}", 1)
    table = Table(title=f"SMS for {shown}", show_lines=True)
    for col in ("decision", "message", "to", "status", "tries", "provider id", "when", "notes"):
        table.add_column(col)
    for r in rows:
        notes = []
        if r["error_code"]:
            notes.append(r["error_code"])
        if r["last_error"] and r["status"] != "accepted":
            notes.append(r["last_error"][:80])
        if r["reconciled"]:
            notes.append("checked with the provider after an unanswered send")
        for a in r.get("history", []):
            if a["http_status"] or a["error"]:
                notes.append(f"try {a['attempt']}: {a['http_status'] or ''} {a['outcome']}".strip())
        table.add_row(
            r["decision_id"][:8],
            r["template"],
            mask_phone(r["phone_e164"]),
            r["status"] + (f" ({r['provider_status']})" if r["provider_status"] else ""),
            str(r["attempts"]),
            (r["provider_message_id"] or "-")
            + (f"\n{r['segments']} segment(s)" if r["segments"] else ""),
            _when(r["accepted_at"] or r["updated_at"]),
            "\n".join(notes) or "-",
        )
    console.print(table)


@app.command()
def failures(
    limit: int = typer.Option(50, min=1, help="How many to show, newest first."),
) -> None:
    """Messages that failed for good or cannot be delivered, for follow-up by phone."""

    async def fetch(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        rows = await pool.fetch(
            MESSAGES_SQL + " WHERE status IN ('failed', 'undeliverable')"
            " ORDER BY updated_at DESC LIMIT $1",
            limit,
        )
        return [dict(r) for r in rows]

    rows = with_pool("notify", fetch, migrate=True, size=1)
    table = Table(title=f"SMS not delivered ({len(rows)})")
    for col in ("participant", "NIK", "to", "message", "status", "reason", "when"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["participant_id"][:8],
            r["nik_masked"] or "-",
            mask_phone(r["phone_e164"]),
            r["template"],
            r["status"],
            r["error_code"] or "-",
            _when(r["updated_at"]),
        )
    console.print(table)
