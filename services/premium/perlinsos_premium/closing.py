"""Month close: bill every running cover, recompute, freeze every line's month, publish.

Idempotent: a month already closed for every line is left alone and nothing is
published again. Set-based throughout (a million participants close in seconds, see
`benchmarks/bench_premium.py`). The close takes the close lock alone, so no batch of
decisions can change the month while it is frozen; batches that come later correct a
closed month only through adjustments in the first open month.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from perlinsos_premium import metrics
from perlinsos_premium.billing import period_index
from perlinsos_premium.ledger import CLOSE_LOCK, roll_period
from perlinsos_premium.summaries import add_to_outbox, build_events
from perlinsos_shared.clock import period_of
from perlinsos_shared.events import FundingLine, PremiumSummaryWithArrears
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.sql import insert_rows

log = logging.getLogger("perlinsos.premium")


class CloseRefused(ValueError):
    """The month cannot be closed (a month that has not started yet)."""


@dataclass
class CloseResult:
    period: str
    already_closed: bool
    billed_now: int = 0
    seconds: float = 0.0
    summaries: list[PremiumSummaryWithArrears] = field(default_factory=list)


async def close_month(pool: asyncpg.Pool, period: str, today: date) -> CloseResult:
    period_index(period)  # validates YYYY-MM
    if period > period_of(today):
        raise CloseRefused(f"{period} has not started yet (today is {today.isoformat()})")
    started = time.perf_counter()
    lines = [line.value for line in FundingLine]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CLOSE_LOCK)
        closed = await conn.fetchval(
            "SELECT count(*) FROM summaries WHERE period = $1 AND status = 'closed'"
            " AND funding_line = ANY($2::text[])",
            period,
            lines,
        )
        if closed == len(lines):
            return CloseResult(period, already_closed=True)
        billed_now = 0
        if not await conn.fetchval("SELECT 1 FROM rolled_periods WHERE period = $1", period):
            billed_now = await roll_period(conn, period)
        # every line gets a closed month, even one with nobody billed
        await insert_rows(
            conn,
            "summaries",
            (("funding_line", "text"), ("period", "text")),
            [(line, period) for line in lines],
            then="ON CONFLICT DO NOTHING",
        )
        # recompute from the ledger and adjustments: the closed figures trace to people
        drift = await conn.fetch(
            "WITH l AS (SELECT funding_line, count(*)::int AS n, sum(jkk_idr)::bigint AS jkk,"
            " sum(jkm_idr)::bigint AS jkm FROM ledger WHERE period = $1 GROUP BY 1),"
            " a AS (SELECT funding_line, sum(jkk_idr + jkm_idr)::bigint AS adj FROM adjustments"
            " WHERE booked_period = $1 GROUP BY 1),"
            " t AS (SELECT s.funding_line, coalesce(l.n, 0) AS n, coalesce(l.jkk, 0) AS jkk,"
            " coalesce(l.jkm, 0) AS jkm, coalesce(a.adj, 0) AS adj FROM summaries s"
            " LEFT JOIN l USING (funding_line) LEFT JOIN a USING (funding_line)"
            " WHERE s.period = $1 AND s.status = 'provisional')"
            " UPDATE summaries s SET participants = t.n, jkk_idr = t.jkk, jkm_idr = t.jkm,"
            " adjustments_idr = t.adj FROM t WHERE s.funding_line = t.funding_line"
            " AND s.period = $1 AND (s.participants, s.jkk_idr, s.jkm_idr, s.adjustments_idr)"
            " IS DISTINCT FROM (t.n, t.jkk, t.jkm, t.adj) RETURNING s.funding_line",
            period,
        )
        if drift:
            log.warning(
                "running totals differed from the ledger at close; ledger figures used",
                extra={"period": period, "funding_lines": [r["funding_line"] for r in drift]},
            )
        rows = await conn.fetch(
            "UPDATE summaries SET status = 'closed', revision = revision + 1, changed = false,"
            " closed_at = now() WHERE period = $1 AND status = 'provisional'"
            " RETURNING * ",
            period,
        )
        rows = sorted(rows, key=lambda r: r["funding_line"])
        events = await build_events(conn, rows, today)
        outbox = Outbox()
        add_to_outbox(outbox, events)
        await outbox.flush(conn)
    seconds = time.perf_counter() - started
    metrics.months_closed.add(len(rows))
    metrics.close_duration.record(seconds)
    log.info(
        "month closed",
        extra={"period": period, "line_months": len(rows), "seconds": round(seconds, 3)},
    )
    return CloseResult(period, False, billed_now, seconds, events)
