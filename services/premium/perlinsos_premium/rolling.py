"""The month roll: every month since the last one rolled is billed, once, even after downtime.

The roll and decision batches must not interleave: a batch that ends a cover and a roll
that bills the month from an older snapshot of the covers would bill a month after an
exit (or a batch planning from a ledger the roll is about to fill would miss a month).
Batches take `CLOSE_LOCK` shared; the roll takes it exclusively (as a month close does),
so each sees the other's committed work. The roll inserts with ON CONFLICT DO NOTHING and
records each rolled month in `rolled_periods`, so running it twice bills nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import asyncpg

from perlinsos_premium.billing import next_period, period_index
from perlinsos_premium.ledger import CLOSE_LOCK, roll_period
from perlinsos_shared.clock import period_of

log = logging.getLogger("perlinsos.premium")


def months_to_roll(last_rolled: str | None, current: str) -> list[str]:
    """The months after `last_rolled` up to and including `current` (just `current` on a
    fresh ledger: decision batches bill everything up to the day they run)."""
    if last_rolled is None:
        return [current]
    if period_index(last_rolled) >= period_index(current):
        return []
    out, period = [], next_period(last_rolled)
    while period_index(period) <= period_index(current):
        out.append(period)
        period = next_period(period)
    return out


@dataclass(frozen=True)
class Rolled:
    period: str
    billed: int
    closed: bool = False  # the month was already closed: nothing billed, marked rolled


async def roll_due_months(pool: asyncpg.Pool, today: date) -> list[Rolled]:
    """Bill every month not rolled yet, oldest first, in one transaction under the lock."""
    current = period_of(today)
    last = await pool.fetchval("SELECT max(period) FROM rolled_periods")
    if not months_to_roll(last, current):
        return []
    out: list[Rolled] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CLOSE_LOCK)
        last = await conn.fetchval("SELECT max(period) FROM rolled_periods")  # under the lock
        for period in months_to_roll(last, current):
            if await conn.fetchval(
                "SELECT 1 FROM summaries WHERE period = $1 AND status = 'closed'", period
            ):
                await conn.execute(
                    "INSERT INTO rolled_periods (period) VALUES ($1) ON CONFLICT DO NOTHING",
                    period,
                )
                out.append(Rolled(period, 0, closed=True))
                continue
            out.append(Rolled(period, await roll_period(conn, period)))
    for r in out:
        log.info("month rolled", extra={"period": r.period, "billed": r.billed})
    return out
