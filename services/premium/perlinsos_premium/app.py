"""The premium service, wired: subscriptions, handlers, background loops."""

from __future__ import annotations

import asyncio
import os

from perlinsos_premium.handlers import handle_decisions, handle_participants, handle_payments
from perlinsos_premium.ledger import check_rates
from perlinsos_premium.rolling import roll_due_months
from perlinsos_premium.summaries import publish_changed, warn_missed_due_dates
from perlinsos_shared.clock import today_local
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS, PARTICIPANTS, PAYMENTS

PUBLISH_INTERVAL_S = 0.5  # coalescing window of provisional summaries
# How often to check for a month not rolled yet. The fault suite sets it to a fraction of
# a second (PERLINSOS_PREMIUM_ROLL_INTERVAL_S) to race the roll against decision batches.
ROLL_INTERVAL_S = float(os.environ.get("PERLINSOS_PREMIUM_ROLL_INTERVAL_S", "60"))
DUE_DATE_CHECK_S = 300.0  # how often to look for a contribution due date just missed


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The premium service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("premium", settings)
    runtime.on_startup(check_rates)  # overlapping rate rows: refuse to start
    runtime.consume(DECISIONS, handle_decisions)
    runtime.consume(PARTICIPANTS, handle_participants)
    runtime.consume(PAYMENTS, handle_payments)

    async def publish_summaries() -> None:
        """Publish changed summaries; errors escape to the supervisor, which restarts it."""
        while True:
            if await publish_changed(runtime.pool, today_local()) and runtime.relay:
                runtime.relay.wake()
            await asyncio.sleep(PUBLISH_INTERVAL_S)

    async def roll_months() -> None:
        """Bill every running cover once per month, catching up months missed while down.
        Errors escape to the runtime's supervisor, which starts the loop again."""
        while True:
            await roll_due_months(runtime.pool, today_local())
            await asyncio.sleep(ROLL_INTERVAL_S)

    async def watch_due_dates() -> None:
        """Warn finance the day a line misses a contribution due date (supervised)."""
        while True:
            await warn_missed_due_dates(runtime.pool, today_local())  # summary republished
            await asyncio.sleep(DUE_DATE_CHECK_S)

    runtime.background(publish_summaries)
    runtime.background(watch_due_dates)
    runtime.background(roll_months)
    return runtime


def main() -> None:
    build().run()
