"""Operator commands of the eligibility service (`perlinsos eligibility ...`).

They work on eligibility's own schema (through `DATABASE_URL`, or the stack file a running
`perlinsos up` leaves). Decisions they make go to eligibility's outbox in the same
transaction; a running eligibility instance publishes them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from perlinsos_eligibility.app import promote_waiting
from perlinsos_eligibility.config import rule_book
from perlinsos_eligibility.domain import above_quota, assess, window_check
from perlinsos_eligibility.placement import Placement
from perlinsos_eligibility.rules import RuleBook
from perlinsos_eligibility.store import by_nik_hash, decision_history, read_places
from perlinsos_shared import operator
from perlinsos_shared.clock import now_local, today_local
from perlinsos_shared.events import FundingLine
from perlinsos_shared.masking import mask_nik, pseudonyms
from perlinsos_shared.operator import open_operator_pool
from perlinsos_shared.outbox import Outbox

app = typer.Typer(help="Operator commands of the eligibility service.", no_args_is_help=True)
console = Console()


@app.callback()
def _root() -> None:
    """Commands that read or act on the eligibility service's own state."""


async def _pool(database_url: str | None, *, writes: bool = False) -> asyncpg.Pool:
    """Reads go through the operators' read-only login; changes (with migrations first)
    log in as eligibility."""
    return await open_operator_pool("eligibility", database_url, migrate=writes)


# --- reevaluate ---------------------------------------------------------------------


@dataclass
class Changed:
    participant_id: str
    before: str
    after: str
    reasons: list[str]


async def reevaluate(
    database_url: str, line: FundingLine, as_of: date, book: RuleBook | None = None
) -> list[Changed]:
    """Re-decide `line` under the rules in force on `as_of`; decisions where outcomes change."""
    book = book or rule_book()
    pool = await _pool(database_url, writes=True)
    try:
        async with pool.acquire() as conn, conn.transaction():
            before = {
                r["participant_id"]: r["outcome"]
                for r in await conn.fetch(
                    "SELECT participant_id, outcome FROM participants WHERE funding_line = $1",
                    line.value,
                )
            }
            work = Placement(conn, book, now_local())
            await work.reevaluate(line, as_of)
            outbox = Outbox()
            decided = await work.finish(outbox)
            await outbox.flush(conn)
    finally:
        await pool.close()
    return [
        Changed(
            d.participant_id,
            before.get(d.participant_id, "?"),
            d.outcome,
            [r.code for r in d.reasons],
        )
        for d in decided
    ]


@app.command("reevaluate")
def reevaluate_command(
    line: FundingLine = typer.Option(..., "--line", help="The funding line to re-decide."),
    as_of: str = typer.Option(
        ..., "--as-of", callback=operator.day, help="The date whose rules apply (YYYY-MM-DD)."
    ),
    database_url: str | None = typer.Option(None, envvar="DATABASE_URL", hidden=True),
) -> None:
    """After a rule change: re-decide a line's participants; publish only changed outcomes."""
    day = date.fromisoformat(as_of)
    book = rule_book()
    rule_set = book.in_force(line, day)
    label = rule_set.label if rule_set else "-"
    changed = asyncio.run(reevaluate(database_url or "", line, day, book))
    table = Table(title=f"{line.value}: re-decided under {label} as of {day}")
    for col in ("participant", "before", "after", "reasons"):
        table.add_column(col)
    for c in changed[:50]:
        table.add_row(c.participant_id, c.before, c.after, ", ".join(c.reasons))
    console.print(table)
    console.print(f"{len(changed)} decision(s) published (outcome changed)")


# --- explain ------------------------------------------------------------------------


async def explain(
    database_url: str, nik: str, as_of: date | None = None, book: RuleBook | None = None
) -> dict[str, Any] | None:
    """What eligibility decided for the participant with this NIK, rule by rule."""
    pool = await _pool(database_url)
    try:
        async with pool.acquire() as conn:
            person = await by_nik_hash(conn, pseudonyms(nik.strip()))
            if person is None:
                return None
            history = await decision_history(conn, person.participant_id)
    finally:
        await pool.close()
    book = book or rule_book()
    out: dict[str, Any] = {
        "participant_id": person.participant_id,
        "nik": mask_nik(nik.strip()),
        "occupation": person.occupation.value,
        "funding_line": person.funding_line.value if person.funding_line else None,
        "outcome": person.outcome,
        "rule_version": person.rule_version,
        "cover_start": person.cover_start.isoformat() if person.cover_start else None,
        "cover_end": person.cover_end.isoformat() if person.cover_end else None,
        "checks": person.checks,
        "history": [
            {
                "decided_at": r["decided_at"].isoformat(),
                "outcome": r["outcome"],
                "promoted": r["promoted"],
                "rule_version": r["rule_version"],
                "reasons": [x["code"] for x in r["reasons"]],
            }
            for r in history
        ],
    }
    rule_set = book.by_label(person.rule_version)
    if rule_set is not None:
        until = book.in_force_until(rule_set)
        out["rule_set"] = {
            "regulation": rule_set.regulation,
            "in_force_from": rule_set.in_force_from.isoformat(),
            "in_force_until": until.isoformat() if until else None,
        }
    if as_of is not None:
        a = assess(person.applicant, book, as_of)
        checks = [c.as_json() for c in a.checks]
        if a.rule_set is not None:
            checks.append(window_check(a.rule_set, as_of).as_json())
        out["as_of"] = {"date": as_of.isoformat(), "rule_version": a.rule_version, "checks": checks}
    return out


def _checks_table(title: str, checks: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("rule", "result", "detail", "code"):
        table.add_column(col)
    for c in checks:
        ok = "[green]passed[/green]" if c["passed"] else "[red]failed[/red]"
        table.add_row(str(c["rule"]), ok, str(c["detail"]), str(c.get("code") or ""))
    return table


@app.command("explain")
def explain_command(
    nik: str = typer.Argument(
        ..., callback=operator.nik, help="The participant's NIK (16 digits)."
    ),
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        callback=operator.day,
        help="Also check the rules again as on this date (YYYY-MM-DD).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    database_url: str | None = typer.Option(None, envvar="DATABASE_URL", hidden=True),
) -> None:
    """Which rules passed and failed for one participant, and under which version."""
    day = date.fromisoformat(as_of) if as_of else None
    found = asyncio.run(explain(database_url or "", nik, day))
    if found is None:
        operator.fail(f"no participant with NIK {mask_nik(nik)} in eligibility", 1)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    rs = found.get("rule_set") or {}
    console.print(
        f"participant {found['participant_id']} (NIK {found['nik']}), {found['occupation']}: "
        f"[bold]{found['outcome']}[/bold] on {found['funding_line']} under "
        f"{found['rule_version']} ({rs.get('regulation', '?')}, in force "
        f"{rs.get('in_force_from', '?')} to {rs.get('in_force_until') or 'now'})"
    )
    if found["cover_start"] or found["cover_end"]:
        console.print(f"cover {found['cover_start'] or '-'} to {found['cover_end'] or '-'}")
    console.print(_checks_table("rules applied", found["checks"]))
    if "as_of" in found:
        a = found["as_of"]
        console.print(_checks_table(f"under {a['rule_version']} on {a['date']}", a["checks"]))
    history = Table(title="decisions")
    for col in ("decided at", "outcome", "rule version", "reasons"):
        history.add_column(col)
    for h in found["history"]:
        outcome = h["outcome"] + (" (promoted)" if h["promoted"] else "")
        history.add_row(h["decided_at"], outcome, h["rule_version"], ", ".join(h["reasons"]))
    console.print(history)


# --- places and promote -------------------------------------------------------------


async def places(database_url: str, book: RuleBook | None = None) -> list[dict[str, Any]]:
    book = book or rule_book()
    today = today_local()
    pool = await _pool(database_url)
    try:
        async with pool.acquire() as conn:
            rows = await read_places(conn)
    finally:
        await pool.close()
    out = []
    for r in rows:
        rule_set = book.in_force(FundingLine(r["funding_line"]), today)
        out.append(
            {
                "funding_line": r["funding_line"],
                "rule_version": rule_set.label if rule_set else None,
                "quota": rule_set.quota_on(today) if rule_set else 0,
                "funded_now": bool(rule_set and rule_set.funded_on(today)),
                "holders": r["holders"],
                "above_quota": above_quota(rule_set, today, r["holders"]) if rule_set else 0,
                "waiting": r["waiting"],
                "consistent": r["holders"] == r["counted_holders"]
                and r["waiting"] == r["counted_waiting"],
            }
        )
    return out


@app.command("places")
def places_command(
    database_url: str | None = typer.Option(None, envvar="DATABASE_URL", hidden=True),
) -> None:
    """Quota, places taken, holders above the quota and waitlist length per funding line.

    Holders above a quota that fell at the year change keep their cover; nobody new is
    admitted until they are below it. What they cost: `perlinsos premium status`.
    """
    table = Table(title=f"places on {today_local()}")
    columns = ("line", "rule version", "quota", "funded now", "eligible", "above quota")
    for col in (*columns, "waiting", "ok"):
        table.add_column(col)
    rows = asyncio.run(places(database_url or ""))
    for p in rows:
        table.add_row(
            p["funding_line"],
            str(p["rule_version"]),
            f"{p['quota']:,}",
            "yes" if p["funded_now"] else "no",
            f"{p['holders']:,}",
            f"[yellow]{p['above_quota']:,}[/yellow]" if p["above_quota"] else "0",
            f"{p['waiting']:,}",
            "yes" if p["consistent"] else "[red]counter drift[/red]",
        )
    console.print(table)
    for p in rows:
        if p["above_quota"]:
            console.print(
                f"{p['funding_line']}: {p['above_quota']:,} holder(s) above the "
                f"{today_local().year} quota keep their cover; no newcomer is admitted until "
                "holders are below it (cost: `perlinsos premium status`)"
            )


@app.command("promote")
def promote_command(
    database_url: str | None = typer.Option(None, envvar="DATABASE_URL", hidden=True),
) -> None:
    """Give free places to the waitlist now (instances also do it every minute)."""

    async def run() -> int:
        pool = await _pool(database_url, writes=True)
        try:
            return await promote_waiting(pool, rule_book())
        finally:
            await pool.close()

    console.print(f"{asyncio.run(run())} decision(s) published")
