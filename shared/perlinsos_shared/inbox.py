"""Inbox: consumed events' (`source`, `id`), recorded in the transaction that applied them.

CloudEvents makes `source` + `id` unique, not `id` alone: two agencies may number their
events alike. Rows recorded before the inbox knew sources have source '' and still match
on the id alone, so an event applied then is not applied again when redelivered now.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

EventKey = tuple[str, str]  # (source, id)


async def claim(
    conn: asyncpg.Connection,
    events: Sequence[EventKey],
    *,
    dead_lettered: bool = False,
) -> set[EventKey]:
    """Record these events; return those never seen before (the ones to apply).
    `dead_lettered`: recorded with their dead letter, not applied (`perlinsos dlq redrive`)."""
    if not events:
        return set()
    rows = await conn.fetch(
        "INSERT INTO inbox (source, event_id, dead_lettered)"
        " SELECT DISTINCT e.source, e.id, $3::boolean"
        " FROM unnest($1::text[], $2::text[]) AS e(source, id)"
        " WHERE NOT EXISTS (SELECT 1 FROM inbox l WHERE l.source = '' AND l.event_id = e.id)"
        " ON CONFLICT DO NOTHING RETURNING source, event_id",
        [source for source, _ in events],
        [event_id for _, event_id in events],
        dead_lettered,
    )
    return {(r["source"], r["event_id"]) for r in rows}
