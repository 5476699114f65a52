"""An outbox relay keeps working, without a process restart, across PostgreSQL being
unreachable for a while (every connection cut, new ones refused) and across a PostgreSQL
restart (DESIGN.md, guarantees: "Nothing stops").

Real parts: a PostgreSQL server of the test's own (so it can be restarted), reached
through a TCP proxy the test can cut; a real Kafka-protocol broker; the relay under the
same supervisor a service runs it with. Rows are written beside the relay (straight to
PostgreSQL) before, during and after each fault; every row must reach the broker, in
order per key, and the supervisor must have logged each outage once, not per retry.

And a broker rebuilt empty: with the relay held meanwhile and the outbox replayed, rows
written while it was away reach it only after the older rows of the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from perlinsos_devruntime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from perlinsos_devruntime.tcpproxy import TcpProxy
from perlinsos_shared.db import SHARED_MIGRATIONS, create_pool, migrate
from perlinsos_shared.kafka import ensure_topics, make_producer
from perlinsos_shared.outbox import OutboxRelay, hold, replay
from perlinsos_shared.settings import Settings
from perlinsos_shared.supervisor import Supervisor
from perlinsos_shared.topics import PARTICIPANTS

pytestmark = pytest.mark.flow

SERVICE = "relaytest"
OUTAGE_S = float(os.environ.get("PERLINSOS_TEST_OUTAGE_S", "20"))
KEYS = [f"P{i}" for i in range(7)]


def _via(url: str, port: int) -> str:
    head, _, tail = url.partition("@")
    host_port, _, rest = tail.partition("/")
    return f"{head}@{host_port.rsplit(':', 1)[0]}:{port}/{rest}"


async def _write(url: str, first: int, count: int) -> None:
    """Outbox rows `first`..`first+count-1`, as a handler would commit them."""
    conn = await asyncpg.connect(url, server_settings={"search_path": SERVICE})
    try:
        await conn.executemany(
            "WITH o AS (INSERT INTO outbox (topic, key, value, headers)"
            " VALUES ($1, $2, $3, '{}') RETURNING id) INSERT INTO outbox_pending SELECT id FROM o",
            [
                (PARTICIPANTS.name, KEYS[n % len(KEYS)], json.dumps({"n": n}).encode())
                for n in range(first, first + count)
            ],
        )
    finally:
        await conn.close()


class Received:
    """Everything on the topic, read as it arrives: per key, the row numbers in order."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        self.per_key: dict[str, list[int]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        parts = [TopicPartition(PARTICIPANTS.name, p) for p in range(PARTICIPANTS.partitions)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=300)
            for recs in batches.values():
                for r in recs:
                    assert r.key is not None and r.value is not None
                    self.per_key.setdefault(r.key.decode(), []).append(json.loads(r.value)["n"])

    def distinct(self) -> set[int]:
        return {n for ns in self.per_key.values() for n in ns}

    async def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.distinct()) < count:
            assert time.monotonic() < deadline, f"{len(self.distinct())}/{count} reached the broker"
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


async def _until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_relay_keeps_working_across_postgres_unreachable_and_restarted(
    own_postgres: EmbeddedPostgres,
    kafka_bootstrap: str,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="perlinsos.supervisor")
    direct = own_postgres.admin_url
    proxy = await asyncio.to_thread(TcpProxy(own_postgres.port).start)
    settings = settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap})
    await ensure_topics(settings)
    # the relay reaches PostgreSQL only through the proxy; the command timeout bounds a
    # statement whose answer never comes
    pool = await create_pool(_via(direct, proxy.port), SERVICE, max_size=3)
    await migrate(pool, SERVICE, [SHARED_MIGRATIONS])
    producer = make_producer(settings, client_id="relaytest")
    await producer.start()

    async def publish(topic: str, key: str | None, value: bytes, headers: dict[str, str]) -> Any:
        return await producer.send(
            topic,
            value,
            key=key.encode() if key else None,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    relay = OutboxRelay(pool, SERVICE, publish, batch_size=40)
    supervisor = Supervisor(SERVICE, backoff_initial_s=0.2, backoff_max_s=2.0, healthy_after_s=3)
    loop = supervisor.start("outbox-relay", relay.run, on_stop=relay.stop)
    received = Received(kafka_bootstrap)
    await received.start()
    try:
        await _write(direct, 0, 150)
        await received.wait_for(150)

        # 1. PostgreSQL unreachable: connections cut, new ones refused, for OUTAGE_S
        await asyncio.to_thread(proxy.cut)
        await _write(direct, 150, 50)  # handlers elsewhere keep committing
        await _until(lambda: supervisor.failing() == ["outbox-relay"], "relay not failing")
        await asyncio.sleep(max(0.0, OUTAGE_S - 1))
        assert len(received.distinct()) == 150
        await _write(direct, 200, 50)
        await asyncio.to_thread(proxy.restore)
        await received.wait_for(250)
        await _until(lambda: supervisor.failing() == [], "relay did not recover", timeout=30)
        restarts_after_cut = loop.restarts
        assert restarts_after_cut >= 1

        # 2. PostgreSQL restarted (fast shutdown, then started again on the same data)
        await _write(direct, 250, 50)
        await asyncio.to_thread(own_postgres.stop)
        await _until(lambda: supervisor.failing() == ["outbox-relay"], "relay not failing")
        await asyncio.sleep(2)
        await asyncio.to_thread(own_postgres.start)
        await _write(direct, 300, 50)
        await received.wait_for(350)
        await _until(lambda: supervisor.failing() == [], "relay did not recover", timeout=30)
        assert loop.restarts > restarts_after_cut
        assert loop.status == "running"  # the same loop, in the same process, all along
    finally:
        await supervisor.stop()
        await received.stop()
        await producer.stop()
        await pool.close()
        await asyncio.to_thread(proxy.stop)

    assert received.distinct() == set(range(350))
    for key, numbers in received.per_key.items():
        first_seen = list(dict.fromkeys(numbers))  # a re-sent row may repeat; never reorder
        assert first_seen == sorted(first_seen), f"key {key} out of order"
    conn = await asyncpg.connect(direct, server_settings={"search_path": SERVICE})
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox_pending") == 0
    finally:
        await conn.close()
    failures = [
        r.getMessage()
        for r in caplog.records
        if r.name == "perlinsos.supervisor" and r.levelno >= logging.ERROR
    ]
    # one line per outage, not one per retry
    assert failures == ["background loop failed; starting it again with backoff"] * 2


async def test_a_rebuilt_broker_gets_older_rows_before_newer_ones(
    infra_mode: str, database_url: str, settings: Settings, tmp_path: Path
) -> None:
    """The broker loses its topics; rows written meanwhile must not reach the new broker
    ahead of the older rows of the same key: `hold` keeps the relay back until `replay`,
    which sends everything again oldest first. (Without the hold, this test fails: the
    rows written while the broker was away arrive first.)"""
    if infra_mode != "embedded":
        pytest.skip("needs a broker the test can wipe (the embedded one)")
    kafka = EmbeddedKafka(tmp_path / "kafka", port=free_port())
    await asyncio.to_thread(kafka.start)
    settings = settings.model_copy(update={"kafka_bootstrap_servers": kafka.bootstrap_servers})
    pool = await create_pool(database_url, SERVICE, max_size=3)
    await migrate(pool, SERVICE, [SHARED_MIGRATIONS])
    producer = make_producer(settings, client_id="relaytest")
    supervisor = Supervisor(SERVICE, backoff_initial_s=0.2, backoff_max_s=2.0)
    received: Received | None = None
    try:
        await ensure_topics(settings)
        await producer.start()

        async def publish(topic: str, key: str | None, value: bytes, headers: Any) -> Any:
            return await producer.send(topic, value, key=key.encode() if key else None)

        relay = OutboxRelay(pool, SERVICE, publish, batch_size=20)
        supervisor.start("outbox-relay", relay.run, on_stop=relay.stop)
        await _write(database_url, 0, 70)
        await _until(lambda: relay.published == 70, "first rows not published")

        await asyncio.to_thread(kafka.stop)  # memory storage: it comes back empty
        await hold(pool, SERVICE)
        await _write(database_url, 70, 35)  # written while the broker is away
        await asyncio.to_thread(kafka.start)
        await ensure_topics(settings)
        received = Received(kafka.bootstrap_servers)
        await received.start()
        await asyncio.sleep(3)
        assert received.distinct() == set(), "a held relay published"

        assert await replay(pool, SERVICE) == 70
        await received.wait_for(105)
    finally:
        await supervisor.stop()
        if received is not None:
            await received.stop()
        await producer.stop()
        await pool.close()
        await asyncio.to_thread(kafka.stop)
    for key, numbers in received.per_key.items():
        first_seen = list(dict.fromkeys(numbers))
        assert first_seen == sorted(first_seen), f"key {key}: newer row ahead of older"
