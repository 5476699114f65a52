"""Retention: published outbox rows and inbox ids are kept for a window, then deleted.

The window (`PERLINSOS_RETENTION_DAYS`, default 30) is what the outbox and inbox are
for: `perlinsos outbox replay` refills a broker that lost its topics from the outbox rows
still kept, and consumers drop a replayed event because its id is still in their inbox.
An event leaves a producer's outbox `window` after it was written (published rows keep
no time of publication: migration 0005) and a consumer's inbox `window` after it was
received (later), so every event a replay can send again is still known to its
consumers. The personal data outbox rows carry (NIK, names, phones in enrolments and
decisions) goes with them. Rows not published yet are never deleted.

Deletes go in small batches (short transactions; no long lock on a busy table), once an
hour, in every service, as a supervised loop: errors escape and it starts again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

log = logging.getLogger("perlinsos.retention")

PRUNE_EVERY_S = 3600.0
BATCH = 5000


@dataclass(frozen=True)
class Pruned:
    outbox: int
    inbox: int


async def _in_batches(pool: asyncpg.Pool, sql: str, days: float) -> int:
    total = 0
    while True:
        status = await pool.execute(sql, days, BATCH)
        n = int(status.split()[-1])
        total += n
        if n < BATCH:
            return total


async def prune(pool: asyncpg.Pool, days: float) -> Pruned:
    """Delete published outbox rows written more than `days` ago and inbox ids received
    more than `days` ago; how many of each."""
    outbox = await _in_batches(
        pool,
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox o"
        " WHERE created_at < now() - make_interval(secs => $1::float8 * 86400)"
        " AND refused_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id)"
        " ORDER BY id LIMIT $2)",
        days,
    )
    inbox = await _in_batches(
        pool,
        "DELETE FROM inbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM inbox"
        " WHERE received_at < now() - make_interval(secs => $1::float8 * 86400) LIMIT $2))",
        days,
    )
    if outbox or inbox:
        log.info(
            "retention: old outbox rows and inbox ids deleted",
            extra={"outbox": outbox, "inbox": inbox, "days": days},
        )
    return Pruned(outbox, inbox)


async def prune_forever(pool: asyncpg.Pool, days: float, every_s: float = PRUNE_EVERY_S) -> None:
    while True:
        await prune(pool, days)
        await asyncio.sleep(every_s)
