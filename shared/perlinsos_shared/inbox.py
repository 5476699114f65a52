"""Inbox: consumed event ids, recorded in the transaction that applied them."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def claim(conn: asyncpg.Connection, topic: str, event_ids: Sequence[str]) -> set[str]:
    """Record these ids; return those never seen before (the ones to apply)."""
    if not event_ids:
        return set()
    rows = await conn.fetch(
        "INSERT INTO inbox (event_id, topic) SELECT DISTINCT unnest($1::text[]), $2 "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        list(event_ids),
        topic,
    )
    return {r["event_id"] for r in rows}
