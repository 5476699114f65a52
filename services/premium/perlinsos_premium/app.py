"""The premium service, wired: subscriptions, handlers, background loops."""

from __future__ import annotations

import asyncio
import logging

from perlinsos_premium.handlers import handle_decisions, handle_participants, handle_payments
from perlinsos_premium.ledger import CLOSE_LOCK, check_rates, roll_period
from perlinsos_premium.summaries import publish_changed
from perlinsos_shared.clock import current_period, today_local
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS, PARTICIPANTS, PAYMENTS

log = logging.getLogger("perlinsos.premium")

PUBLISH_INTERVAL_S = 0.5  # coalescing window of provisional summaries
ROLL_INTERVAL_S = 60.0  # how often to check that the current month is billed


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The premium service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("premium", settings)
    runtime.on_startup(check_rates)  # overlapping rate rows: refuse to start
    runtime.consume(DECISIONS, handle_decisions)
    runtime.consume(PARTICIPANTS, handle_participants)
    runtime.consume(PAYMENTS, handle_payments)

    async def publish_summaries() -> None:
        while True:
            try:
                if await publish_changed(runtime.pool, today_local()) and runtime.relay:
                    runtime.relay.wake()
            except Exception:
                log.exception("summary publication failed; retrying")
            await asyncio.sleep(PUBLISH_INTERVAL_S)

    async def roll_months() -> None:
        """Bill every running cover once per month, when the month begins (set-based)."""
        while True:
            try:
                await roll_current(runtime)
            except Exception:
                log.exception("month roll failed; retrying")
            await asyncio.sleep(ROLL_INTERVAL_S)

    runtime.background(publish_summaries)
    runtime.background(roll_months)
    return runtime


async def roll_current(runtime: ServiceRuntime) -> None:
    period = current_period()
    async with runtime.pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM rolled_periods WHERE period = $1", period):
            return
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", CLOSE_LOCK)
        if await conn.fetchval(
            "SELECT 1 FROM summaries WHERE period = $1 AND status = 'closed'", period
        ):
            await conn.execute(
                "INSERT INTO rolled_periods (period) VALUES ($1) ON CONFLICT DO NOTHING", period
            )
            return
        billed = await roll_period(conn, period)
    log.info("month rolled", extra={"period": period, "billed": billed})


def main() -> None:
    build().run()
