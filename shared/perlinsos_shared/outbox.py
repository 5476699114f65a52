"""Transactional outbox and its relay.

Handlers add events to an `Outbox` while they change state; `flush` writes them in the
same transaction (one round trip). The relay publishes unpublished rows in id order
(commit order per key: one participant's rows are serialised by that participant's row
locks), with the trace context stored beside each row, and marks them published.

Only one relay per service publishes at a time: it holds a session advisory lock, and it
does all its reading and writing on the connection that holds the lock. A lock lives and
dies with its connection, so when that connection is lost (PostgreSQL restarted, the
network cut) the relay's next statement fails, the loop escapes to the supervisor, and
the relay starts again by waiting for the lock on a fresh connection from the pool (a
pool survives a PostgreSQL restart; a single connection does not).

Refilling a broker that lost its topics (`replay`): rows are marked unpublished again
and the relay publishes them, oldest first, before anything newer (id order). A relay
batch in flight holds its rows (`FOR UPDATE`) so a replay waits for it and then marks
those rows too. While the broker is being rebuilt, `hold` stops every relay of the
service from publishing, so that no row written meanwhile reaches the empty broker
before the older rows it depends on (an exit before its enrolment); `replay` lifts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from perlinsos_shared.envelope import CONTENT_TYPE, CloudEvent, encode
from perlinsos_shared.metrics import platform

log = logging.getLogger("perlinsos.outbox")

Publish = Callable[[str, str | None, bytes, dict[str, str]], Awaitable[Any]]


@dataclass
class Outbox:
    """Rows to write with the current transaction."""

    topics: list[str] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def add(
        self,
        topic: str,
        key: str | None,
        event: CloudEvent[Any],
        trace_headers: Mapping[str, str] | None = None,
    ) -> None:
        headers = {"content-type": CONTENT_TYPE, **(trace_headers or {})}
        self.add_raw(topic, key, encode(event), headers)

    def add_raw(
        self, topic: str, key: str | None, value: bytes, headers: Mapping[str, str]
    ) -> None:
        self.topics.append(topic)
        self.keys.append(key)
        self.values.append(value)
        self.headers.append(dict(headers))

    def __len__(self) -> int:
        return len(self.topics)

    async def flush(self, conn: asyncpg.Connection) -> None:
        if not self.topics:
            return
        await conn.execute(
            "INSERT INTO outbox (topic, key, value, headers) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::jsonb[])",
            self.topics,
            self.keys,
            self.values,
            self.headers,
        )


class OutboxRelay:
    """Publishes the outbox of one service, in order, in batches."""

    def __init__(
        self, pool: asyncpg.Pool, service: str, publish: Publish, *, batch_size: int = 5000
    ) -> None:
        self._pool = pool
        self._service = service
        self._publish = publish
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._stopping = False
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def backlog(self) -> int:
        value = await self._pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return int(value or 0)

    async def run(self) -> None:
        """Take the relay lock, then publish until stopped; any failure escapes (the
        supervisor starts the relay again, which waits for the lock anew)."""
        lock = f"relay:{self._service}"
        async with self._pool.acquire() as conn:
            held = False
            try:
                while not self._stopping:
                    if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", lock):
                        held = True
                        break
                    await self._sleep(1.0)
                while not self._stopping:
                    # on the lock's own connection: if it is gone, so is the lock, and
                    # this fails before anything is published
                    sent = await self.relay_once(conn)
                    if sent == 0:
                        await self._sleep(0.05)
            finally:
                if held:  # on a lost connection the lock went with it; nothing to undo
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(
                            conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock), 5
                        )

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def backlog_and_age(self) -> tuple[int, float]:
        """Unpublished rows and the age in seconds of the oldest (0 when none)."""
        row = await self._pool.fetchrow(
            "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS n,"
            " coalesce((SELECT extract(epoch FROM now() - created_at) FROM outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT 1), 0) AS age"
        )
        if row is None:
            return 0, 0.0
        return int(row["n"]), float(row["age"])

    async def relay_once(self, conn: asyncpg.Connection | None = None) -> int:
        """Publish one batch (on `conn`, the lock's connection, or a pooled one)."""
        if conn is None:
            async with self._pool.acquire() as pooled:
                return await self._relay_batch(pooled)
        return await self._relay_batch(conn)

    async def _relay_batch(self, conn: asyncpg.Connection) -> int:
        started = time.perf_counter()
        # idle rounds cost one statement; a batch runs in a transaction that `hold` and
        # `replay` wait for (they take the batch lock exclusively)
        if not await conn.fetchval(_PENDING):
            return 0
        async with conn.transaction():
            await conn.execute(_BATCH_LOCK_SHARED, self._service)
            rows = await conn.fetch(_NEXT_BATCH, self._batch_size)
            if not rows:
                return 0
            await self._publish_rows(rows)
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        self.published += len(rows)
        metrics = platform()
        for topic, n in Counter(r["topic"] for r in rows).items():
            metrics.produced.add(n, {"topic": topic})
        metrics.relay_duration.record(time.perf_counter() - started)
        return len(rows)

    async def _publish_rows(self, rows: list[asyncpg.Record]) -> None:
        # Each message carries the trace context stored beside its row: that of the span
        # that wrote it (the consumer span of the message that caused it), so the next
        # consumer's span is a child of that span. No span per send: a producer span per
        # row was a third of the spans of an enrolment, and says no more than the
        # consumer span around it and the `perlinsos_messages_produced_total` metric.
        publish = self._publish
        pending = [await publish(r["topic"], r["key"], r["value"], r["headers"]) for r in rows]
        await asyncio.gather(*pending)


_PENDING = (
    "SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL)"
    " AND NOT EXISTS (SELECT 1 FROM outbox_hold)"
)
_NEXT_BATCH = (
    "SELECT id, topic, key, value, headers FROM outbox"
    " WHERE published_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox_hold)"
    " ORDER BY id LIMIT $1 FOR UPDATE"
)
_BATCH_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared(hashtext('relay-batch:' || $1))"
_BATCH_LOCK = "SELECT pg_advisory_xact_lock(hashtext('relay-batch:' || $1))"


async def hold(pool: asyncpg.Pool, service: str, reason: str = "broker being rebuilt") -> None:
    """Stop this service's relays from publishing until `replay` (or `release`).

    Returns once no relay batch is in flight any more (a batch waiting for a broker that
    went away ends when its send times out), so nothing this service publishes from now
    on reaches a broker before the `replay`."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO outbox_hold (reason) VALUES ($1) ON CONFLICT DO NOTHING", reason[:200]
        )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_BATCH_LOCK, service)


async def release(pool: asyncpg.Pool) -> None:
    """Let the relays publish again without replaying anything."""
    await pool.execute("DELETE FROM outbox_hold")


async def held(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT EXISTS (SELECT 1 FROM outbox_hold)"))


async def replay(pool: asyncpg.Pool, service: str, since: Any = None) -> int:
    """Mark published rows unpublished again, to refill a broker that lost its topics,
    and lift a `hold`. The relay then publishes them in their original order, before any
    row written after them; a relay batch in flight finishes first (its rows are locked)
    and is marked unpublished too."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_BATCH_LOCK, service)
        if since is None:
            status = await conn.execute(
                "UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL"
            )
        else:
            status = await conn.execute(
                "UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL "
                "AND created_at >= $1",
                since,
            )
        await conn.execute("DELETE FROM outbox_hold")
    return int(status.split()[-1])
