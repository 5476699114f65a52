"""Batch consumption with inbox, outbox and dead letters: the shape of every handler.

A batch of Kafka records is decoded into envelopes; what cannot be decoded goes to the
topic's `.dlq` twin (through the outbox, so it is never lost). The rest is applied in
one transaction: inbox claim (redeliveries drop out), the service's handler, the outbox
rows it added. If the batch fails for a reason that is not the database being away, each
message is retried alone; one that still fails is dead-lettered and the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from pydantic import ValidationError

from perlinsos_shared import inbox
from perlinsos_shared.envelope import RawEnvelope
from perlinsos_shared.metrics import platform
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.telemetry import context_from_headers, scrub, span_headers
from perlinsos_shared.topics import Topic

log = logging.getLogger("perlinsos.consumer")
MAX_BATCH_LINKS = 128  # the SDK's default link limit per span
tracer = trace.get_tracer("perlinsos.consumer")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


class Record(Protocol):
    """The parts of a Kafka record a consumer reads (aiokafka's ConsumerRecord has them)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass
class Incoming:
    """One decoded event, with where it came from and the trace context of its processing."""

    envelope: RawEnvelope
    key: str | None
    headers: dict[str, str]
    record: Record
    span: Span | None = None
    trace_headers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type


Handler = Callable[[asyncpg.Connection, list[Incoming], Outbox], Awaitable[None]]
UndecodableHook = Callable[[Record, str, Outbox], None]


def record_headers(record: Record) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in record.headers or ():
        try:
            out[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
        except UnicodeDecodeError:
            continue
    return out


def dead_letter(outbox: Outbox, topic: Topic, record: Record, error: str) -> None:
    headers = record_headers(record)
    headers.update(
        {
            "x-dlq-error": error[:2000],
            "x-dlq-original-topic": record.topic,
            "x-dlq-original-partition": str(record.partition),
            "x-dlq-original-offset": str(record.offset),
            "x-dlq-failed-at": str(int(time.time())),
        }
    )
    key = record.key.decode(errors="replace") if record.key is not None else None
    outbox.add_raw(topic.dlq, key, record.value or b"", headers)


def decode(record: Record) -> RawEnvelope:
    if record.value is None:
        raise ValueError("empty message value")
    return RawEnvelope.model_validate_json(record.value)


@dataclass
class ConsumerStats:
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0


class BatchConsumer:
    def __init__(
        self,
        *,
        service: str,
        topic: Topic,
        pool_getter: Callable[[], asyncpg.Pool],
        handler: Handler,
        on_undecodable: UndecodableHook | None = None,
        after_commit: Callable[[], None] | None = None,
        max_attempts: int = 3,
    ) -> None:
        self.service = service
        self.topic = topic
        self._pool_getter = pool_getter
        self._handler = handler
        self._on_undecodable = on_undecodable
        self._after_commit = after_commit
        self._max_attempts = max_attempts
        self.stats = ConsumerStats()
        self._metrics = platform()
        self._labels = {"topic": topic.name}
        self._last_poll = time.monotonic()

    def note_poll(self) -> None:
        """The broker is being polled for this consumer now (it is not stuck in a batch)."""
        self._last_poll = time.monotonic()

    def since_poll_s(self) -> float:
        """Seconds since the last poll: long while a batch waits for the database."""
        return time.monotonic() - self._last_poll

    def note_positions(self, kafka_consumer: Any, records: Sequence[Any]) -> None:
        """Consumer lag per partition after this batch: high watermark minus next offset."""
        from aiokafka import TopicPartition

        last: dict[int, int] = {}
        for r in records:
            if r.offset >= last.get(r.partition, -1):
                last[r.partition] = r.offset
        for partition, offset in last.items():
            try:
                high = kafka_consumer.highwater(TopicPartition(self.topic.name, partition))
            except Exception:  # not assigned any more, or no fetch yet
                continue
            if high is not None:
                self._metrics.lag[(self.topic.name, partition)] = max(0, high - offset - 1)

    async def process(self, records: Sequence[Any]) -> None:
        started = time.perf_counter()
        self.stats.batches += 1
        self.stats.consumed += len(records)
        self._metrics.consumed.add(len(records), self._labels)
        good: list[Incoming] = []
        bad: list[tuple[Record, str]] = []
        for record in records:
            try:
                envelope = decode(record)
            except (ValidationError, ValueError) as exc:
                bad.append((record, _short_error(exc)))
                continue
            headers = record_headers(record)
            good.append(
                Incoming(
                    envelope=envelope,
                    key=record.key.decode(errors="replace") if record.key is not None else None,
                    headers=headers,
                    record=record,
                )
            )
        self._open_spans(good)
        # The batch's database work belongs to no single message: a span of its own (in
        # the broker's batch trace) that links each message's span, parent of the SQL spans.
        links = [Link(m.span.get_span_context()) for m in good[:MAX_BATCH_LINKS] if m.span]
        batch_span = tracer.start_span(
            f"{self.topic.name} batch",
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={
                "messaging.destination.name": self.topic.name,
                "messaging.batch.message_count": len(records),
            },
        )
        batch_ctx = batch_span.get_span_context()
        if batch_ctx.is_valid:  # every message names its batch: `perlinsos trace --db`
            batch_ref = f"{batch_ctx.trace_id:032x}-{batch_ctx.span_id:016x}"
            for m in good:
                if m.span is not None:
                    m.span.set_attribute("perlinsos.batch", batch_ref)
        with trace.use_span(batch_span, end_on_exit=True):
            try:
                await self._apply_batch(good, bad)
            except TRANSIENT_ERRORS:
                self._close_spans(good, error="database unavailable")
                raise
            except Exception:  # a poison message somewhere: isolate it
                log.warning("batch failed; applying one message at a time", exc_info=True)
                await self._apply_one_by_one(good, bad)
        self._close_spans(good)
        self._metrics.batch_duration.record(time.perf_counter() - started, self._labels)
        if self._after_commit:
            self._after_commit()

    def _open_spans(self, messages: list[Incoming]) -> None:
        """One CONSUMER span per message, a child of the span that produced it.

        The span's context goes into `Incoming.trace_headers`: what the handler writes to
        the outbox for this message carries it, so the next hop continues the same trace.
        Attributes carry only ids that are not personal data (agency reference, participant
        id, decision id), which `perlinsos trace` searches.
        """
        for m in messages:
            parent = context_from_headers(m.headers)
            attributes: dict[str, Any] = {
                "messaging.system": "kafka",
                "messaging.destination.name": self.topic.name,
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": f"perlinsos-{self.service}",
                "messaging.kafka.destination.partition": m.record.partition,
                "messaging.kafka.offset": m.record.offset,
                "messaging.message.id": m.id,
                "cloudevents.event_type": m.type,
            }
            attributes.update(correlation_attributes(m.envelope.data))
            span = tracer.start_span(
                f"{self.topic.name} process",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            )
            m.span = span
            m.trace_headers = span_headers(span)

    def _close_spans(self, messages: list[Incoming], error: str | None = None) -> None:
        for m in messages:
            if m.span is None:
                continue
            if error:
                m.span.set_status(Status(StatusCode.ERROR, error))
            m.span.end()
            m.span = None

    async def _transaction(self, good: list[Incoming], bad: list[tuple[Record, str]]) -> None:
        pool = self._pool_getter()
        async with pool.acquire() as conn, conn.transaction():
            outbox = Outbox()
            for record, error in bad:
                dead_letter(outbox, self.topic, record, error)
                if self._on_undecodable:
                    self._on_undecodable(record, error, outbox)
            fresh_ids = await inbox.claim(conn, self.topic.name, [m.id for m in good])
            fresh: list[Incoming] = []
            for m in good:
                if m.id in fresh_ids:
                    fresh.append(m)
                    fresh_ids.discard(m.id)  # a repeat inside this batch is a duplicate too
            if fresh:
                await self._handler(conn, fresh, outbox)
            await outbox.flush(conn)
        self.stats.applied += len(fresh)
        self.stats.duplicates += len(good) - len(fresh)
        self.stats.dead_letters += len(bad)
        if fresh:
            self._metrics.applied.add(len(fresh), self._labels)
        if len(good) > len(fresh):
            self._metrics.duplicates.add(len(good) - len(fresh), self._labels)
        if bad:
            self._metrics.dead_letters.add(len(bad), self._labels)

    async def _apply_batch(self, good: list[Incoming], bad: list[tuple[Record, str]]) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._transaction(good, bad)
                return
            except TRANSIENT_ERRORS:
                if attempt == self._max_attempts:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)

    async def _apply_one_by_one(self, good: list[Incoming], bad: list[tuple[Record, str]]) -> None:
        if bad:
            await self._apply_batch([], bad)
        for m in good:
            for attempt in range(1, self._max_attempts + 1):
                try:
                    await self._transaction([m], [])
                    break
                except TRANSIENT_ERRORS:
                    if attempt == self._max_attempts:
                        raise
                    await asyncio.sleep(0.2 * 2**attempt)
                except Exception as exc:
                    if attempt < self._max_attempts:
                        continue
                    log.error(
                        "message dead-lettered after %d attempts",
                        attempt,
                        extra={"event_id": m.id, "topic": self.topic.name, "error": repr(exc)},
                    )
                    if m.span is not None:
                        # not record_exception: an exception's text may quote the input
                        m.span.add_event(
                            "exception",
                            {
                                "exception.type": type(exc).__name__,
                                "exception.message": _short_error(exc),
                            },
                        )
                        m.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                        m.span.set_attribute("perlinsos.dead_lettered", True)
                    await self._dead_letter_applied(m, _short_error(exc))

    async def _dead_letter_applied(self, m: Incoming, error: str) -> None:
        pool = self._pool_getter()
        async with pool.acquire() as conn, conn.transaction():
            outbox = Outbox()
            dead_letter(outbox, self.topic, m.record, error)
            await inbox.claim(conn, self.topic.name, [m.id])
            await outbox.flush(conn)
        self.stats.dead_letters += 1
        self._metrics.dead_letters.add(1, self._labels)


CORRELATION_FIELDS = ("agency", "request_id", "participant_id", "decision_id", "outcome")


def correlation_attributes(data: Any) -> dict[str, str]:
    """`perlinsos.<field>` span attributes from an event's `data`: ids an operator searches
    by (never the NIK, name or phone; those fields are not read)."""
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    for name in CORRELATION_FIELDS:
        value = data.get(name)
        if isinstance(value, str) and value:
            out[f"perlinsos.{name}"] = value[:128]
    return out


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}" for e in exc.errors()[:5]
        ]
        return f"{type(exc).__name__}: " + "; ".join(parts)
    return scrub(f"{type(exc).__name__}: {exc}")[:500]
