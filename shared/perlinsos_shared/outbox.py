"""Transactional outbox and its relay.

Handlers add events to an `Outbox` while they change state; `flush` writes them in the
same transaction (one round trip). The relay publishes unpublished rows in id order
(commit order per key: one participant's rows are serialised by that participant's row
locks), with the trace context stored beside each row, and marks them published.

An outbox row is written once and never changed by publishing it: the ids still to
publish wait in `outbox_pending` (a narrow table of ids, written by `flush` with the
rows), and the relay deletes them there once published. Marking the wide row itself
(`published_at`, until migration 0005) wrote every event a second time: a new version
of a 1-2 KB row in the table and in the WAL, and a dead one for vacuum.

Only one relay per service publishes at a time: it holds a session advisory lock, and it
does all its reading and writing on the connection that holds the lock. A lock lives and
dies with its connection, so when that connection is lost (PostgreSQL restarted, the
network cut) the relay's next statement fails, the loop escapes to the supervisor, and
the relay starts again by waiting for the lock on a fresh connection from the pool (a
pool survives a PostgreSQL restart; a single connection does not).

Refilling a broker that lost its topics (`replay`): rows are marked unpublished again
and the relay publishes them, oldest first, before anything newer (id order): their ids
go back into `outbox_pending`. A relay batch in flight holds its ids (`FOR UPDATE`) and
the batch lock, so a replay waits for it and then marks those rows too. While the broker
is being rebuilt, `hold` stops every relay of the service from publishing, so that no
row written meanwhile reaches the empty broker before the older rows it depends on (an
exit before its enrolment); `replay` lifts it.

A row the broker (or the producer) refuses for itself, deterministically (a record
larger than it accepts), would otherwise fail its batch forever and stop every row behind
it. When a batch fails only with such refusals, each refused row is sent again alone;
one refused again is marked refused (`refused_at`, `refusal`: the error, no content; its
id leaves `outbox_pending`), counted in `perlinsos.outbox.refused`, logged, and skipped;
every other row of the batch is published as usual. Any other error (broker away,
timeouts, authorisation) fails the batch as before and it is retried whole. Later rows
of the refused row's key are published too: a refusal never clears by itself, and
holding the key would stop that participant's events for good with no way to see why;
the refused row is kept, shown by `perlinsos outbox status` / `refused`, and
`retry_refused` queues it again once the limit is raised (it then arrives after the
later rows of its key).
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
from aiokafka.errors import InvalidTopicError, MessageSizeTooLargeError, RecordTooLargeError
from opentelemetry.instrumentation.utils import suppress_instrumentation

from perlinsos_shared.envelope import CONTENT_TYPE, CloudEvent, encode
from perlinsos_shared.metrics import platform
from perlinsos_shared.supervisor import error_summary

log = logging.getLogger("perlinsos.outbox")

Publish = Callable[[str, str | None, bytes, dict[str, str]], Awaitable[Any]]

# Refusals that belong to the record itself and repeat on every try (Kafka's
# MESSAGE_TOO_LARGE and RECORD_LIST_TOO_LARGE, the producer's own size check, a topic name
# the broker rejects); retriable errors and ones about the broker or the client are not here
REFUSED = (MessageSizeTooLargeError, RecordTooLargeError, InvalidTopicError)


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
            "WITH o AS (INSERT INTO outbox (topic, key, value, headers)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::json[])"
            " RETURNING id) INSERT INTO outbox_pending (id) SELECT id FROM o",
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
        self.refused = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def backlog(self) -> int:
        value = await self._pool.fetchval("SELECT count(*) FROM outbox_pending")
        return int(value or 0)

    async def run(self) -> None:
        """Take the relay lock, then publish until stopped; any failure escapes (the
        supervisor starts the relay again, which waits for the lock anew).

        Its statements make no spans: they belong to no message (each row carries its
        own trace context), and the sampler dropped every one of them as an orphan
        anyway; not instrumented at all, they cost nothing to make and drop."""
        with suppress_instrumentation():
            await self._run()

    async def _run(self) -> None:
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
            "SELECT (SELECT count(*) FROM outbox_pending) AS n,"
            " coalesce((SELECT extract(epoch FROM now() - created_at) FROM outbox"
            " WHERE id = (SELECT min(id) FROM outbox_pending)), 0) AS age"
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
            await conn.execute(_RELAY_BATCH_BEGIN, self._service)
            rows = await conn.fetch(_NEXT_BATCH, self._batch_size)
            if not rows:
                return 0
            refused = await self._publish_rows(rows)
            if refused:
                refused = await self._confirm_refused([r for r in rows if r["id"] in refused])
                await conn.executemany(
                    "UPDATE outbox SET refused_at = now(), refusal = $2 WHERE id = $1",
                    sorted(refused.items()),
                )
            sent = [r for r in rows if r["id"] not in refused]
            # published or refused: no longer pending either way
            await conn.execute(
                "DELETE FROM outbox_pending WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
        self.published += len(sent)
        metrics = platform()
        for topic, n in Counter(r["topic"] for r in sent).items():
            metrics.produced.add(n, {"topic": topic})
        for row in rows:
            if row["id"] in refused:
                self.refused += 1
                metrics.outbox_refused.add(1, {"topic": row["topic"]})
                log.error(
                    "outbox row refused by the broker; marked refused and skipped",
                    extra={
                        "service": self._service,
                        "outbox_id": row["id"],
                        "topic": row["topic"],
                        "bytes": len(row["value"]),
                        "refusal": refused[row["id"]],
                    },
                )
        metrics.relay_duration.record(time.perf_counter() - started)
        return len(rows)

    async def _publish_rows(self, rows: list[asyncpg.Record]) -> dict[int, str]:
        """Send the rows, pipelined; the ids refused for themselves (see `REFUSED`) and
        why. Any other error escapes, after every send has finished.

        Each message carries the trace context stored beside its row: that of the span
        that wrote it (the consumer span of the message that caused it), so the next
        consumer's span is a child of that span. No span per send: a producer span per
        row was a third of the spans of an enrolment, and says no more than the
        consumer span around it and the `perlinsos_messages_produced_total` metric."""
        publish = self._publish
        pending: list[Any] = []
        for r in rows:
            try:
                pending.append(await publish(r["topic"], r["key"], r["value"], r["headers"]))
            except REFUSED as exc:  # the producer's own check, before anything is sent
                pending.append(_failed(exc))
            except BaseException:
                await asyncio.gather(*pending, return_exceptions=True)
                raise
        results = await asyncio.gather(*pending, return_exceptions=True)
        refused: dict[int, str] = {}
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, REFUSED):
                refused[row["id"]] = error_summary(result)
            elif isinstance(result, BaseException):
                raise result
        return refused

    async def _confirm_refused(self, rows: list[asyncpg.Record]) -> dict[int, str]:
        """Send each row refused in a batch again, alone and in order (a broker refuses a
        whole record batch for one record in it); the ones refused again, and why."""
        refused: dict[int, str] = {}
        for row in rows:
            try:
                future = await self._publish(row["topic"], row["key"], row["value"], row["headers"])
                await future
            except REFUSED as exc:
                refused[row["id"]] = error_summary(exc)
        return refused


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


# rows still to publish (neither published nor refused by the broker): their ids are in
# `outbox_pending`
_PENDING = "SELECT EXISTS (SELECT 1 FROM outbox_pending) AND NOT EXISTS (SELECT 1 FROM outbox_hold)"
# The ids are locked (the narrow rows), not the outbox rows: nothing is written to those.
# Each pending id then looks up its row by primary key (the lateral subquery with OFFSET 0
# stays a nested loop: the planner cannot turn it into a join of its own choosing). As a
# plain join, after a burst (ids deleted faster than autovacuum comes, statistics that
# still count them) the planner chose a merge join that read the outbox from its first
# row up to the first pending id, every round: 15-35 ms a round at 130,000 outbox rows,
# growing with the outbox, where a round of 10-20 rows costs 0.2 ms.
_NEXT_BATCH = (
    "SELECT o.id, o.topic, o.key, o.value, o.headers"
    " FROM (SELECT id FROM outbox_pending WHERE NOT EXISTS (SELECT 1 FROM outbox_hold)"
    " ORDER BY id LIMIT $1 FOR UPDATE) p"
    " CROSS JOIN LATERAL (SELECT id, topic, key, value, headers FROM outbox"
    " WHERE outbox.id = p.id OFFSET 0) o"
    " ORDER BY p.id"
)
# A relay batch commits without waiting for its WAL to reach disk (`synchronous_commit`
# off for this transaction only): all it writes is which ids were published (or refused).
# If PostgreSQL crashes before that WAL is flushed, those ids are pending again and are
# published again: a duplicate, which every consumer drops by its inbox, never a loss
# (nothing the batch read was deleted or changed). Transactions that write state, inbox and
# outbox keep waiting for the disk: losing one of those after Kafka offsets were committed
# would lose the event.
_RELAY_BATCH_BEGIN = (
    "SELECT pg_advisory_xact_lock_shared(hashtext('relay-batch:' || $1)),"
    " set_config('synchronous_commit', 'off', true)"
)
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
        # published: neither pending nor refused
        status = await conn.execute(
            "INSERT INTO outbox_pending (id) SELECT id FROM outbox"
            " WHERE refused_at IS NULL AND ($1::timestamptz IS NULL OR created_at >= $1)"
            " ON CONFLICT DO NOTHING",
            since,
        )
        await conn.execute("DELETE FROM outbox_hold")
    return int(status.split()[-1])


async def refused_rows(pool: asyncpg.Pool, limit: int = 100) -> list[asyncpg.Record]:
    """Rows the broker refused (id, topic, size, when, why; never the content)."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT id, topic, octet_length(value) AS bytes, created_at, refused_at, refusal"
        " FROM outbox WHERE refused_at IS NOT NULL ORDER BY id LIMIT $1",
        limit,
    )
    return rows


async def retry_refused(pool: asyncpg.Pool, ids: list[int] | None = None) -> int:
    """Queue refused rows (these, or all) for publication again; how many."""
    status = await pool.execute(
        "WITH q AS (UPDATE outbox SET refused_at = NULL, refusal = NULL"
        " WHERE refused_at IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))"
        " RETURNING id) INSERT INTO outbox_pending (id) SELECT id FROM q ON CONFLICT DO NOTHING",
        ids,
    )
    return int(status.split()[-1])
