"""A row the broker refuses for itself does not stop the outbox relay.

Real parts: a Kafka-protocol broker, PostgreSQL, the relay with the services' own producer
(`make_producer`, which accepts records up to 4 MiB). One row of 5 MiB is refused every
time it is sent; it must be marked refused with the reason and skipped, every row behind
it (of its key too) published in order, and `retry_refused` must queue it again for a
relay whose producer accepts it (the operator raised the limit).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from perlinsos_shared.db import SHARED_MIGRATIONS, create_pool, migrate
from perlinsos_shared.kafka import bootstrap, ensure_topics, make_producer
from perlinsos_shared.outbox import OutboxRelay, refused_rows, retry_refused
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import PARTICIPANTS
from tests.test_relay_outage import KEYS, Received

pytestmark = pytest.mark.flow

SERVICE = "relayrefused"
BIG = 5 * 1024 * 1024  # over the producer's 4 MiB max_request_size


async def _write(url: str, rows: list[tuple[str, bytes]]) -> None:
    conn = await asyncpg.connect(url, server_settings={"search_path": SERVICE})
    try:
        await conn.executemany(
            "WITH o AS (INSERT INTO outbox (topic, key, value, headers)"
            " VALUES ($1, $2, $3, '{}') RETURNING id) INSERT INTO outbox_pending SELECT id FROM o",
            [(PARTICIPANTS.name, key, value) for key, value in rows],
        )
    finally:
        await conn.close()


def _row(n: int, pad: int = 0) -> tuple[str, bytes]:
    return KEYS[n % len(KEYS)], json.dumps({"n": n, "pad": "x" * pad}).encode()


def _publisher(producer: AIOKafkaProducer) -> Any:
    async def publish(topic: str, key: str | None, value: bytes, headers: Any) -> Any:
        return await producer.send(topic, value, key=key.encode() if key else None)

    return publish


@dataclass
class Parts:
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    received: Received


@pytest.fixture
async def parts(database_url: str, settings: Settings) -> AsyncIterator[Parts]:
    """The service's outbox tables, its producer, and a reader of the topic."""
    await ensure_topics(settings)
    pool = await create_pool(database_url, SERVICE, max_size=3)
    await migrate(pool, SERVICE, [SHARED_MIGRATIONS])
    producer = make_producer(settings, client_id="relayrefused")
    await producer.start()
    received = Received(bootstrap(settings))
    await received.start()
    try:
        yield Parts(pool, producer, received)
    finally:
        await received.stop()
        await producer.stop()
        await pool.close()


async def test_a_refused_row_is_marked_and_the_rows_behind_it_go_out(
    parts: Parts, database_url: str, settings: Settings
) -> None:
    pool, received = parts.pool, parts.received
    big_n = 12
    # row 12 is refused; rows 13.. include later rows of its key (12 + len(KEYS))
    await _write(database_url, [_row(n, BIG if n == big_n else 0) for n in range(40)])
    relay = OutboxRelay(pool, SERVICE, _publisher(parts.producer), batch_size=10)
    while await relay.relay_once():
        pass
    assert relay.refused == 1
    assert await relay.backlog() == 0  # nothing left behind the refused row
    await received.wait_for(39)
    assert received.distinct() == set(range(40)) - {big_n}
    for key, numbers in received.per_key.items():
        assert numbers == sorted(numbers), f"key {key} out of order"

    [refused] = await refused_rows(pool)
    assert refused["bytes"] > BIG
    assert refused["refusal"].startswith("MessageSizeTooLargeError")
    assert await pool.fetchval("SELECT count(*) FROM outbox_pending") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE refused_at IS NULL") == 39

    # the operator raises the limit and queues it again: the broker takes it
    assert await retry_refused(pool) == 1
    bigger = AIOKafkaProducer(
        bootstrap_servers=bootstrap(settings), max_request_size=BIG * 2, acks="all"
    )
    await bigger.start()
    try:
        assert await OutboxRelay(pool, SERVICE, _publisher(bigger)).relay_once() == 1
    finally:
        await bigger.stop()
    assert await refused_rows(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM outbox_pending") == 0


async def test_a_record_batch_refused_for_one_row_costs_only_that_row(
    parts: Parts, database_url: str
) -> None:
    """A Kafka broker refuses a whole record batch (MESSAGE_TOO_LARGE) for one record in
    it, so rows sent beside it fail too. The embedded broker accepts any size, so its
    refusal is emulated over the real producer: the record over 1 MiB and the row sent
    right after it fail in the batch; only the big one is refused again alone."""
    real = _publisher(parts.producer)
    tries: list[int] = []  # the row number of every send

    async def publish(topic: str, key: str | None, value: bytes, headers: Any) -> Any:
        n = json.loads(value)["n"]
        tries.append(n)
        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # row 5 is over the limit; row 6 shares its record batch on the first send only
        if n == 5 or (n == 6 and tries.count(6) == 1):
            refused.set_exception(MessageSizeTooLargeError())
            return refused
        return await real(topic, key, value, headers)

    await _write(database_url, [_row(n, 2 * 1024 * 1024 if n == 5 else 0) for n in range(20)])
    relay = OutboxRelay(parts.pool, SERVICE, publish)
    assert await relay.relay_once() == 20  # every row of the batch handled
    assert (relay.published, relay.refused) == (19, 1)  # the neighbour went out alone
    assert tries == [*range(20), 5, 6]  # the batch, then the two refused ones alone
    assert [r["id"] for r in await refused_rows(parts.pool)] == [6]  # ids count from 1
    await parts.received.wait_for(19)
    assert parts.received.distinct() == set(range(20)) - {5}
