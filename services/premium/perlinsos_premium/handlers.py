"""Premium's Kafka handler: covers from decisions, ledger rows, coalesced summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import asyncpg

from perlinsos_premium.billing import billed_periods
from perlinsos_premium.ledger import (
    Delta,
    delete_ledger_after,
    insert_ledger,
    load_rates,
    new_delta,
    publish_summaries,
    today,
)
from perlinsos_shared.clock import period_of
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.events import EligibilityDecided
from perlinsos_shared.outbox import Outbox


@dataclass
class _Batch:
    """Writes gathered for one batch, flushed before anything that must see them."""

    covers: list[tuple[str, str, date]] = field(default_factory=list)
    ledger: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    delta: Delta = field(default_factory=new_delta)

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self.covers:
            await conn.executemany(
                "INSERT INTO covers (participant_id, funding_line, cover_start) VALUES ($1,$2,$3)"
                " ON CONFLICT (participant_id) DO UPDATE SET funding_line = excluded.funding_line,"
                " cover_start = excluded.cover_start, cover_end = NULL",
                self.covers,
            )
            self.covers.clear()
        await insert_ledger(conn, self.ledger, self.delta)
        self.ledger.clear()


async def handle_decisions(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    rates = await load_rates(conn)
    through = today()
    batch = _Batch()
    for m in messages:
        d = EligibilityDecided.model_validate(m.envelope.data)
        if d.outcome == "eligible" and d.funding_line and d.cover_start:
            line = d.funding_line.value
            batch.covers.append((d.participant_id, line, d.cover_start))
            batch.ledger += [
                (d.participant_id, p, line, *rates.monthly(line, p))
                for p in billed_periods(d.cover_start, None, through)
            ]
        elif d.outcome == "exited" and d.cover_end:
            await batch.flush(conn)
            await conn.execute(
                "UPDATE covers SET cover_end = $2 WHERE participant_id = $1",
                d.participant_id,
                d.cover_end,
            )
            await delete_ledger_after(conn, d.participant_id, period_of(d.cover_end), batch.delta)
    await batch.flush(conn)
    await publish_summaries(conn, batch.delta, outbox, messages[-1].trace_headers)
