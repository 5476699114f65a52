"""Operator commands of the notify service (`perlinsos notify ...`)."""

from __future__ import annotations

import asyncio
import getpass
from typing import Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from perlinsos_notify.store import ResendRefused, messages_of, not_delivered
from perlinsos_notify.store import resend as resend_message
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.masking import mask_nik, mask_phone, pseudonyms
from perlinsos_shared.operator import (
    database_url,
    fail,
    open_operator_pool,
    operator_settings,
    with_pool,
)

app = typer.Typer(help="Operator commands of the notify service.", no_args_is_help=True)
console = Console()


@app.callback()
def _root() -> None:
    """Commands that read or act on the notify service's own state."""


async def find_messages(database_url: str, who: str) -> list[dict[str, Any]]:
    """Messages of one participant, in decision order: by NIK (16 digits) or participant id."""
    pool = await open_operator_pool("notify", database_url, size=1)  # reads only
    try:
        if len(who) == 16 and who.isdigit():
            return await messages_of(pool, nik_hashes=pseudonyms(who))
        return await messages_of(pool, participant_id=who)
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
def failures(
    limit: int = typer.Option(50, min=1, help="How many to show, newest first."),
) -> None:
    """Messages that failed for good, cannot be delivered, or that the provider has neither
    confirmed nor denied for longer than SMS_UNCONFIRMED_ALERT_S (check those in the
    provider's console, then `perlinsos notify resend MESSAGE_ID` if it has no record)."""
    alert_s = operator_settings().sms_unconfirmed_alert_s

    async def fetch(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await not_delivered(pool, alert_s, limit)

    rows = with_pool("notify", fetch, size=1)  # reads only
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
    message_id: str = typer.Argument(..., help="The message id `perlinsos notify failures` shows."),
    note: str = typer.Option(
        ..., "--note", help="What was checked (e.g. 'not in the provider console'); kept."
    ),
    by: str = typer.Option(
        getpass.getuser(), "--by", help="Who resends (kept in the message's history)."
    ),
) -> None:
    """Send a failed message again, or an unconfirmed one after checking the provider has no
    record of it. The message's history records who resent it and why."""
    alert_s = operator_settings().sms_unconfirmed_alert_s

    async def act(pool: asyncpg.Pool) -> dict[str, Any]:
        return await resend_message(pool, message_id.strip(), actor=by, note=note, alert_s=alert_s)

    try:
        was = with_pool("notify", act, migrate=True, size=1)
    except ResendRefused as exc:
        fail(f"not resent: {exc}", 1)
    console.print(
        f"{message_id} ({was['status']}, {was['attempts']} tries) goes out again at the"
        " next sender round; `perlinsos notify status` shows it."
    )
