"""Finance summaries: coalesced provisional revisions, closed revisions, budget crossings.

Handlers only change running totals and mark a line-month `changed`; the publisher
turns every changed line-month into one new revision, so a burst of enrolments gives one
event per line-month per publication interval, not one per enrolment. Each publication
writes the new revision and its outbox row in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg

from perlinsos_premium import metrics
from perlinsos_premium.arrears import (
    LineArrearsState,
    LineMonth,
    Terms,
    arrears_fields,
    due_date,
    line_arrears,
    missed_on,
)
from perlinsos_premium.billing import fiscal_year
from perlinsos_premium.budget import crossed, places_fields
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import FundingLine, PremiumSummaryWithArrears
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.sql import insert_rows
from perlinsos_shared.topics import SUMMARIES

log = logging.getLogger("perlinsos.premium")

SOURCE = "perlinsos/premium"


async def load_terms(conn: asyncpg.Connection | asyncpg.Pool) -> Terms:
    row = await conn.fetchrow(
        "SELECT due_day, due_month_offset, grace_days, lapse_after_months FROM payment_terms"
    )
    if row is None:
        return Terms()
    return Terms(
        row["due_day"], row["due_month_offset"], row["grace_days"], row["lapse_after_months"]
    )


async def line_months(conn: asyncpg.Connection | asyncpg.Pool) -> list[LineMonth]:
    """Every line-month with what is owed and what was paid."""
    rows = await conn.fetch(
        "SELECT s.funding_line, s.period, s.jkk_idr + s.jkm_idr + s.adjustments_idr AS amount,"
        " coalesce(p.paid, 0) AS paid, s.participants FROM summaries s LEFT JOIN (SELECT"
        " funding_line, period, sum(amount_idr) AS paid FROM payments GROUP BY 1, 2) p"
        " USING (funding_line, period) ORDER BY 1, 2"
    )
    return [
        LineMonth(
            r["funding_line"], r["period"], int(r["amount"]), int(r["paid"]), r["participants"]
        )
        for r in rows
    ]


async def arrears_now(
    conn: asyncpg.Connection | asyncpg.Pool, today: date
) -> tuple[list[LineMonth], dict[str, LineArrearsState]]:
    """Every line-month, and each line's arrears. People at risk: those billed in a line's
    missed months. One missed month: its participants (the running total, one ledger row
    per person); several: counted in the ledger, each person once (at 1,000,000 people a
    month, a second or more)."""
    months = await line_months(conn)
    arrears = line_arrears(months, today, await load_terms(conn))
    billed = {(m.funding_line, m.period): m.participants for m in months}
    for line, state in arrears.items():
        if len(state.overdue) == 1:
            state.people_at_risk = billed.get((line, next(iter(state.overdue))), 0)
    missed = [(line, p) for line, s in arrears.items() if len(s.overdue) > 1 for p in s.overdue]
    if missed:
        rows = await conn.fetch(
            "SELECT l.funding_line, count(DISTINCT l.participant_id) AS n FROM ledger l"
            " JOIN unnest($1::text[], $2::text[]) AS m(f, p)"
            " ON l.funding_line = m.f AND l.period = m.p GROUP BY 1",
            [m[0] for m in missed],
            [m[1] for m in missed],
        )
        for r in rows:
            arrears[r["funding_line"]].people_at_risk = int(r["n"])
    return months, arrears


async def funded_places(conn: asyncpg.Connection | asyncpg.Pool) -> dict[tuple[str, int], int]:
    """(line, fiscal year) -> the places that year's allocation pays for."""
    rows = await conn.fetch(
        "SELECT funding_line, fiscal_year, places FROM budgets WHERE places IS NOT NULL"
    )
    return {(r["funding_line"], r["fiscal_year"]): int(r["places"]) for r in rows}


async def budget_position(
    conn: asyncpg.Connection | asyncpg.Pool,
) -> dict[tuple[str, int], tuple[int, int]]:
    """(line, fiscal year) -> (allocation, committed so far), over every known line-year."""
    rows = await conn.fetch(
        "WITH used AS (SELECT funding_line, substr(period, 1, 4)::int AS fiscal_year,"
        " sum(jkk_idr + jkm_idr + adjustments_idr) AS used FROM summaries GROUP BY 1, 2)"
        " SELECT funding_line, fiscal_year, coalesce(b.amount_idr, 0) AS budget,"
        " coalesce(u.used, 0) AS used FROM used u FULL JOIN budgets b"
        " USING (funding_line, fiscal_year)"
    )
    return {(r["funding_line"], r["fiscal_year"]): (int(r["budget"]), int(r["used"])) for r in rows}


async def build_events(
    conn: asyncpg.Connection, rows: Sequence[Any], today: date
) -> list[PremiumSummaryWithArrears]:
    """Summary events for summary rows (as just updated), with budget and arrears."""
    if not rows:
        return []
    budgets = await budget_position(conn)
    places = await funded_places(conn)
    months, arrears = await arrears_now(conn, today)
    paid = {(m.funding_line, m.period): m for m in months}
    out = []
    for r in rows:
        line, period = r["funding_line"], r["period"]
        budget, used = budgets.get((line, fiscal_year(period)), (0, 0))
        amount = int(r["jkk_idr"]) + int(r["jkm_idr"]) + int(r["adjustments_idr"])
        m = paid.get((line, period))
        state = arrears.get(line)
        paid_idr = m.paid_idr if m else 0
        funded = places.get((line, fiscal_year(period)))
        out.append(
            PremiumSummaryWithArrears(
                funding_line=FundingLine(line),
                period=period,
                status=r["status"],
                revision=r["revision"],
                participants=r["participants"],
                jkk_idr=r["jkk_idr"],
                jkm_idr=r["jkm_idr"],
                adjustments_idr=r["adjustments_idr"],
                amount_idr=amount,
                budget_idr=budget,
                budget_used_idr=used,
                paid_idr=paid_idr,
                outstanding_idr=max(0, amount - paid_idr),
                overdue_periods=list(state.overdue) if state else [],
                **arrears_fields(state),
                **places_fields(funded, r["participants"], int(r["jkk_idr"]) + int(r["jkm_idr"])),
            )
        )
    await _budget_alerts(
        conn, budgets, {(e.funding_line.value, fiscal_year(e.period)) for e in out}
    )
    return out


async def _budget_alerts(
    conn: asyncpg.Connection,
    budgets: dict[tuple[str, int], tuple[int, int]],
    touched: set[tuple[str, int]],
) -> None:
    """Log and count each 80% / 100% crossing of a line's allocation once."""
    keys: list[tuple[str, int, int, int]] = []
    for line, year in sorted(touched):
        budget, used = budgets.get((line, year), (0, 0))
        keys += [(line, year, t, used) for t in crossed(budget, used)]
    if not keys:
        return
    fresh = await insert_rows(
        conn,
        "budget_alerts",
        (("funding_line", "text"), ("fiscal_year", "int"), ("threshold_pct", "int"),
         ("used_idr", "bigint")),
        keys,
        then="ON CONFLICT DO NOTHING RETURNING funding_line, fiscal_year, threshold_pct, used_idr",
    )  # fmt: skip
    for r in fresh:
        budget = budgets[(r["funding_line"], r["fiscal_year"])][0]
        log.warning(
            "budget threshold crossed",
            extra={
                "funding_line": r["funding_line"],
                "fiscal_year": r["fiscal_year"],
                "threshold_pct": r["threshold_pct"],
                "used_idr": int(r["used_idr"]),
                "budget_idr": budget,
            },
        )
        metrics.budget_crossings.add(
            1,
            {
                "funding_line": r["funding_line"],
                "fiscal_year": str(r["fiscal_year"]),
                "threshold_pct": str(r["threshold_pct"]),
            },
        )


def add_to_outbox(
    outbox: Outbox,
    events: Sequence[PremiumSummaryWithArrears],
    trace_headers: dict[str, str] | None = None,
) -> None:
    for e in events:
        key = f"{e.funding_line.value}:{e.period}"
        outbox.add(SUMMARIES.name, key, make_event(SOURCE, e, subject=key), trace_headers)
        metrics.summaries_published.add(
            1, {"funding_line": e.funding_line.value, "status": e.status}
        )


async def publish_changed(pool: asyncpg.Pool, today: date) -> list[PremiumSummaryWithArrears]:
    """One new revision per changed provisional line-month, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "UPDATE summaries SET revision = revision + 1, changed = false"
            " WHERE changed AND status = 'provisional' RETURNING *"
        )
        if not rows:
            return []
        events = await build_events(conn, rows, today)
        outbox = Outbox()
        for e, r in zip(events, rows, strict=True):
            add_to_outbox(outbox, [e], r["trace_headers"] or None)
        await outbox.flush(conn)
        return events


async def mark_line_changed(conn: asyncpg.Connection, lines: list[str]) -> None:
    """Republish the latest provisional month of each line (its arrears changed)."""
    await conn.execute(
        "UPDATE summaries s SET changed = true FROM (SELECT funding_line, max(period) AS period"
        " FROM summaries WHERE status = 'provisional' AND funding_line = ANY($1::text[])"
        " GROUP BY 1) l WHERE s.funding_line = l.funding_line AND s.period = l.period",
        lines,
    )


async def warn_missed_due_dates(pool: asyncpg.Pool, today: date) -> int:
    """Announce, once each, the due dates lines have missed: a warning log line and a
    metric for finance, and the line's latest summary republished with its arrears.
    Returns how many were announced now."""
    async with pool.acquire() as conn, conn.transaction():
        _, arrears = await arrears_now(conn, today)
        missed = [(s, p) for s in arrears.values() for p in s.overdue]
        if not missed:
            return 0
        terms = await load_terms(conn)
        fresh = await insert_rows(
            conn,
            "arrears_alerts",
            (("funding_line", "text"), ("period", "text"), ("missed_on", "date")),
            [(s.funding_line, p, missed_on(p, terms)) for s, p in missed],
            then="ON CONFLICT DO NOTHING RETURNING funding_line, period",
        )
        for r in fresh:
            state = arrears[r["funding_line"]]
            log.warning(
                "contribution due date missed: participants at risk of losing cover",
                extra={
                    "funding_line": r["funding_line"],
                    "period": r["period"],
                    "due_date": due_date(r["period"], terms).isoformat(),
                    "months_unpaid": state.months_unpaid,
                    "people_at_risk": state.people_at_risk,
                    "outstanding_idr": state.outstanding_idr,
                    "lapses_on": state.lapses_on.isoformat() if state.lapses_on else None,
                },
            )
            metrics.due_dates_missed.add(1, {"funding_line": r["funding_line"]})
        await mark_line_changed(conn, sorted({r["funding_line"] for r in fresh}))
        return len(fresh)
