"""Registry flow-test plumbing: the registry alone on the test's broker and database,
and an agency-side client that publishes raw records and reads every topic back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from perlinsos_devruntime.stack import Stack
from perlinsos_shared.clock import now_local
from perlinsos_shared.envelope import CONTENT_TYPE
from perlinsos_shared.settings import Settings
from perlinsos_shared.signing import HEADER, sign_as_claimed
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, PARTICIPANTS

OUTPUT_TOPICS = (INTAKE_REJECTED.name, PARTICIPANTS.name, INTAKE.dlq)


def envelope(
    agency: str | None,
    event_type: str,
    data: Any,
    *,
    source: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source or f"agency/{agency}",
        "type": event_type,
        "time": now_local().isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }


@dataclass
class Out:
    """One record as an agency would read it back."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.value)


def _out(r: ConsumerRecord[Any, Any]) -> Out:
    return Out(
        r.topic,
        r.partition,
        r.offset,
        r.key.decode() if r.key is not None else None,
        r.value or b"",
        {k: v.decode(errors="replace") for k, v in r.headers or ()},
    )


def _signed(value: bytes) -> list[tuple[str, bytes]]:
    """Sign as the agency the message claims to be (origin is tested on its own)."""
    sig = sign_as_claimed(value)
    return [(HEADER, sig.encode())] if sig else []


@dataclass
class IntakeClient:
    bootstrap: str
    database_url: str
    envelope = staticmethod(envelope)

    async def publish(
        self, items: list[tuple[str | None, bytes, dict[str, str] | None]]
    ) -> list[RecordMetadata]:
        """(key, value, extra headers) records to registry.intake.v1, in order."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(
                    INTAKE.name,
                    value,
                    key=key.encode() if key is not None else None,
                    headers=[("content-type", CONTENT_TYPE.encode())]
                    + _signed(value)
                    + [(k, v.encode()) for k, v in (headers or {}).items()],
                )
                for key, value, headers in items
            ]
            return [await f for f in futures]
        finally:
            await producer.stop()

    async def drain(self, topics: tuple[str, ...] = OUTPUT_TOPICS) -> dict[str, list[Out]]:
        """Everything on these topics now, from the beginning to the end offsets."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            parts = [
                TopicPartition(t, p)
                for t in topics
                for p in sorted(consumer.partitions_for_topic(t) or [])
            ]
            out: dict[str, list[Out]] = {t: [] for t in topics}
            if not parts:
                return out
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            remaining = {tp for tp in parts if end[tp] > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=10000)
                for tp, records in batches.items():
                    out[tp.topic].extend(_out(r) for r in records)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
            return out
        finally:
            await consumer.stop()

    async def registry_db(self) -> asyncpg.Connection:
        """A connection to registry's own schema (for outbox and state checks)."""
        conn = await asyncpg.connect(self.database_url)
        await conn.execute('SET search_path TO "registry"')
        return conn

    async def settled(self, inbox_ids: int, dead_letters: int, timeout: float = 90) -> None:
        """Until registry has applied `inbox_ids` distinct decodable events, written
        `dead_letters` dead letters, and published its whole outbox."""
        deadline = time.monotonic() + timeout
        conn = await self.registry_db()
        try:
            while True:
                try:
                    seen = await conn.fetchval("SELECT count(*) FROM inbox")
                    unpublished = await conn.fetchval("SELECT count(*) FROM outbox_pending")
                    dlq = await conn.fetchval(
                        "SELECT count(*) FROM outbox WHERE topic = $1", INTAKE.dlq
                    )
                except asyncpg.UndefinedTableError:
                    seen, unpublished, dlq = 0, 1, 0
                if seen >= inbox_ids and dlq >= dead_letters and unpublished == 0:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"registry did not settle: inbox {seen}/{inbox_ids}, "
                        f"dead letters {dlq}/{dead_letters}, unpublished {unpublished}"
                    )
                await asyncio.sleep(0.1)
        finally:
            await conn.close()


@pytest.fixture
def registry_stack(settings: Settings) -> Iterator[Stack]:
    """The test's broker and PostgreSQL with every topic, and the registry service alone."""
    stack = Stack(settings, http_port_base=0)
    stack.start_infrastructure()
    try:
        stack.start_services(("registry",))
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def intake(registry_stack: Stack) -> IntakeClient:
    return IntakeClient(registry_stack.bootstrap_servers, registry_stack.database_url)
