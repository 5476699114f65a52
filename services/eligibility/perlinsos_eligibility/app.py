"""The eligibility service: participants in, decisions out, the waitlist kept moving."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from perlinsos_eligibility.config import EligibilitySettings, rule_book
from perlinsos_eligibility.handlers import make_handler
from perlinsos_eligibility.placement import Placement
from perlinsos_eligibility.rules import RuleBook
from perlinsos_shared.clock import now_local
from perlinsos_shared.events import FundingLine
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.service import ServiceRuntime
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import PARTICIPANTS

log = logging.getLogger("perlinsos.eligibility")


async def promote_waiting(pool: asyncpg.Pool, book: RuleBook) -> int:
    """One pass: give free places to the oldest waiting, on every line that has any."""
    lines = [
        FundingLine(r["funding_line"])
        for r in await pool.fetch("SELECT funding_line FROM line_places WHERE waiting > 0")
        if r["funding_line"] in set(FundingLine)
    ]
    if not lines:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        work = Placement(conn, book, now_local())
        await work.promote(lines)
        outbox = Outbox()
        decided = await work.finish(outbox)
        await outbox.flush(conn)
    return len(decided)


def build(settings: Settings | None = None) -> ServiceRuntime:
    """The eligibility service, wired: subscriptions, handlers, background loops."""
    runtime = ServiceRuntime("eligibility", settings)
    own = EligibilitySettings()
    book = rule_book()  # fails fast on bad rule data
    runtime.consume(PARTICIPANTS, make_handler(lambda: book))

    async def promotion_loop() -> None:
        """Errors escape to the runtime's supervisor, which starts the loop again."""
        while True:
            promoted = await promote_waiting(runtime.pool, book)
            if promoted:
                log.info("waitlist moved", extra={"decisions": promoted})
                if runtime.relay is not None:
                    runtime.relay.wake()
            await asyncio.sleep(own.promote_interval_s)

    runtime.background(promotion_loop)
    return runtime


def main() -> None:
    build().run()
