"""Operator commands of the notify service (`perlinsos notify ...`)."""

from __future__ import annotations

import asyncio
import getpass
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from perlinsos_notify.store import ResendRefused, messages_of, not_delivered
from perlinsos_notify.store import resend as resend_message
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.db import create_pool
from perlinsos_shared.masking import mask_nik, mask_phone, pseudonym
from perlinsos_shared.settings import resolved_settings

app = typer.Typer(help="Operator commands of the notify service.", no_args_is_help=True)
console = Console()


@app.callback()
def _root() -> None:
    """Commands that read or act on the notify service's own state."""


async def find_messages(database_url: str, who: str) -> list[dict[str, Any]]:
    """Messages of one participant, in decision order: by NIK (16 digits) or participant id."""
    pool = await create_pool(database_url, "notify", max_size=1)
    try:
        if len(who) == 16 and who.isdigit():
            return await messages_of(pool, nik_hash=pseudonym(who), participant_id=None)
        return await messages_of(pool, nik_hash=None, participant_id=who)
    finally:
        await pool.close()


def _when(value: Any) -> str:
    return value.astimezone(BATAM_TZ).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@app.command()
def status(
    who: str = typer.Argument(..., help="the participant's NIK (16 digits) or participant id"),
) -> None:
    """Every SMS for one participant: what was sent, when, and what the provider said."""
    settings = resolved_settings()
    if not settings.database_url:
        console.print("[red]No database: start the stack (`perlinsos up`) or set DATABASE_URL.")
        raise typer.Exit(2)
    rows = asyncio.run(find_messages(settings.database_url, who.strip()))
    shown = mask_nik(who) if len(who) == 16 and who.isdigit() else who
    if not rows:
        console.print(f"No SMS recorded for {shown}.")
        raise typer.Exit(1)
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
        if r["status"] == "sending" and r["unconfirmed_since"]:
            notes.append(f"unconfirmed by the provider since {_when(r['unconfirmed_since'])}")
        for a in r.get("history", []):
            if a["outcome"] == "resend":
                notes.append(f"resent by {a['actor'] or 'an operator'} at {_when(a['at'])}")
            elif a["http_status"] or a["error"]:
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
def failures(limit: int = typer.Option(50, help="how many, newest first")) -> None:
    """Messages that failed for good, cannot be delivered, or that the provider has neither
    confirmed nor denied for longer than SMS_UNCONFIRMED_ALERT_S (check those in the
    provider's console, then `perlinsos notify resend MESSAGE_ID` if it has no record)."""
    settings = resolved_settings()
    if not settings.database_url:
        console.print("[red]No database: start the stack (`perlinsos up`) or set DATABASE_URL.")
        raise typer.Exit(2)

    async def fetch() -> list[dict[str, Any]]:
        assert settings.database_url
        pool = await create_pool(settings.database_url, "notify", max_size=1)
        try:
            return await not_delivered(pool, settings.sms_unconfirmed_alert_s, limit)
        finally:
            await pool.close()

    rows = asyncio.run(fetch())
    table = Table(title=f"SMS not delivered ({len(rows)})")
    for col in ("message", "participant", "NIK", "to", "template", "status", "reason", "when"):
        table.add_column(col, overflow="fold")
    for r in rows:
        unconfirmed = r["status"] == "sending"
        table.add_row(
            r["message_id"],
            r["participant_id"][:8],
            r["nik_masked"] or "-",
            mask_phone(r["phone_e164"]),
            r["template"],
            "unconfirmed" if unconfirmed else r["status"],
            "the provider's list cannot say whether it took it"
            if unconfirmed
            else (r["error_code"] or "-"),
            _when(r["unconfirmed_since"] if unconfirmed else r["updated_at"]),
        )
    console.print(table)


@app.command()
def resend(
    message_id: str = typer.Argument(..., help="the message id `perlinsos notify failures` shows"),
    note: str = typer.Option(
        ..., "--note", help="what was checked (e.g. 'not in the provider console'); kept"
    ),
    by: str = typer.Option(
        getpass.getuser(), "--by", help="who resends (kept in the message's history)"
    ),
) -> None:
    """Send a failed message again, or an unconfirmed one after checking the provider has no
    record of it. The message's history records who resent it and why."""
    settings = resolved_settings()
    if not settings.database_url:
        console.print("[red]No database: start the stack (`perlinsos up`) or set DATABASE_URL.")
        raise typer.Exit(2)

    async def act() -> dict[str, Any]:
        assert settings.database_url
        pool = await create_pool(settings.database_url, "notify", max_size=1)
        try:
            return await resend_message(
                pool,
                message_id.strip(),
                actor=by,
                note=note,
                alert_s=settings.sms_unconfirmed_alert_s,
            )
        finally:
            await pool.close()

    try:
        was = asyncio.run(act())
    except ResendRefused as exc:
        console.print(f"[red]Not resent: {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"{message_id} ({was['status']}, {was['attempts']} tries) goes out again at the"
        " next sender round; `perlinsos notify status` shows it."
    )
