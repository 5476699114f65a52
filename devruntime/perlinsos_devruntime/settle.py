"""For tests: know that a service has done everything it will do with what it was given,
without sleeping.

A sentinel event goes to every partition of the topic a service consumes, after the
test's own events. A consumer applies a partition in order and records each event in its
inbox in the transaction that applied it, so once every sentinel is in the inbox, every
event before them has been applied; and once the outbox has nothing left unpublished,
everything those events caused is on the broker. A reader that then reads each topic up to
its end offsets has seen all of it: "nothing more happened" is a definite condition.

Not used in production (services never import this package).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from perlinsos_shared.envelope import encode, make_event
from perlinsos_shared.events import ParticipantBpjsAnswered


async def publish_sentinels(
    bootstrap: str, topic: str, partitions: int, make: Callable[[int], tuple[str, bytes]]
) -> list[str]:
    """Send `make(p)` (an event id and the encoded event) to each partition `p` of `topic`;
    the event ids, for `until_settled`."""
    ids = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(partitions):
            event_id, value = make(partition)
            await producer.send_and_wait(topic, value, partition=partition)
            ids.append(event_id)
    finally:
        await producer.stop()
    return ids


def bpjs_answer_sentinel(partition: int) -> tuple[str, bytes]:
    """A sentinel for the participants topic: a BPJS answer for a participant nobody has
    seen. Eligibility and premium apply it as nothing (no state, nothing published) but
    record it in their inbox."""
    answer = ParticipantBpjsAnswered(
        participant_id=f"SENTINEL-{uuid.uuid4()}",
        answer="REFUSED",
        import_id="sentinel",
        row=partition + 1,
    )
    event = make_event("test/sentinel", answer)
    return event.id, encode(event)


async def until_settled(
    pool: asyncpg.Pool,
    sentinel_ids: list[str],
    timeout: float = 180,
    poll: Callable[[], object] | None = None,
    also: str | None = None,
) -> None:
    """Until every sentinel is in the service's inbox and its outbox is fully published
    (`pool` is on the service's schema), and the count `also` selects (work a periodic
    job of the service has still to do) is 0. `poll` is awaited, if it returns an
    awaitable, between checks (a listener that must keep reading meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        applied = await pool.fetchval(
            "SELECT count(*) FROM inbox WHERE event_id = ANY($1::text[])", sentinel_ids
        )
        pending = await pool.fetchval(also) if also else 0
        left = await pool.fetchval("SELECT count(*) FROM outbox_pending")
        if applied == len(sentinel_ids) and pending == 0 and left == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not settled in {timeout:.0f}s: {applied}/{len(sentinel_ids)} sentinels "
                f"applied, {pending} pending, {left} outbox rows unpublished"
            )
        if poll is not None:
            result = poll()
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(0.1)


async def read_to_end(
    consumer: AIOKafkaConsumer, topic: str, partitions: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record from the consumer's position on `topic` up to the end offsets as they
    are now (the consumer is assigned all of the topic's partitions)."""
    parts = [TopicPartition(topic, p) for p in range(partitions)]
    ends = await consumer.end_offsets(parts)
    out: list[ConsumerRecord[bytes, bytes]] = []
    while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
        for records in (await consumer.getmany(*parts, timeout_ms=200)).values():
            out += [r for r in records if r.value is not None]
    return out
