"""Batch consumption with inbox, outbox and dead letters: the shape of every handler.

A batch of Kafka records is decoded into envelopes; what cannot be decoded goes to the
topic's `.dlq` twin (through the outbox, so it is never lost). The rest is applied in
one transaction: inbox claim on (`source`, `id`) (redeliveries drop out), the service's
handler, the outbox rows it added.

Failures are of two kinds (`is_transient`):

- transient: the database is away or busy (connection lost, admin shutdown, cannot
  connect now, too many connections, statement or lock timeout, serialization failure,
  deadlock, read-only transaction). The batch waits (capped backoff with jitter) and is
  tried again, for as long as it takes; nothing is dead-lettered. Meanwhile the consumer
  does not poll, and `/readyz` says so after `PERLINSOS_CONSUMER_STALL_S`.
- anything else: some message in the batch is poison. The batch is split in halves until
  the failing message is alone; a message that fails alone `handler_max_attempts` times
  goes to the `.dlq` twin and the partition moves on. A message that cannot even be
  recorded (an over-long id is refused when decoding; anything else the database will not
  store) is dead-lettered without its inbox row, and skipped (logged) if even its dead
  letter is refused for its content, so it never blocks its partition; any other failure
  to write a dead letter is waited out like a transient one (skipping would lose it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from pydantic import ValidationError

from perlinsos_shared import db, inbox
from perlinsos_shared.envelope import RawEnvelope, decode_message
from perlinsos_shared.lean_spans import ConsumerSpans
from perlinsos_shared.metrics import platform
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.scrubbing import scrub
from perlinsos_shared.topics import Topic
from perlinsos_shared.trace_context import span_headers

log = logging.getLogger("perlinsos.consumer")
MAX_BATCH_LINKS = 128  # the SDK's default link limit per span
tracer = trace.get_tracer("perlinsos.consumer")
consumer_spans = ConsumerSpans("perlinsos.consumer")

# SQLSTATE classes and codes that say "the database, not this message": 08 connection
# exception, 53 insufficient resources (too many connections, disk full, out of memory),
# 57 operator intervention (admin shutdown, cannot connect now, statement timeout),
# 40 transaction rollback (serialization failure, deadlock); 25006 read-only transaction
# (a standby promoted meanwhile), 55P03 lock not available (lock timeout), 25P03 idle in
# transaction timeout.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40"})
TRANSIENT_SQLSTATES = frozenset({"25006", "55P03", "25P03"})
# OSErrors about files are a bug or a misconfiguration, not the network
_LOCAL_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)
RETRY_BACKOFF_INITIAL_S = 0.2


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) means "wait and try again", not "poison"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TimeoutError | ConnectionError):
            return True
        if isinstance(current, OSError) and not isinstance(current, _LOCAL_OS_ERRORS):
            return True
        if isinstance(current, asyncpg.PostgresError):
            state = str(getattr(current, "sqlstate", "") or "")
            if state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES:
                return True
        if isinstance(current, asyncpg.InterfaceError) and (
            "closed" in str(current) or "pool is closing" in str(current)
        ):
            # "connection is closed" / "connection was closed in the middle", the pool
            # closing or closed while the service stops: never the message's fault
            return True
        current = current.__cause__ or current.__context__
    return False


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
    _trace_headers: dict[str, str] | None = field(default=None, repr=False)

    @property
    def trace_headers(self) -> dict[str, str]:
        """The message's span as W3C headers, for what the handler writes on its behalf
        (formatted at the first use: many messages write nothing of their own)."""
        if self._trace_headers is None:
            self._trace_headers = span_headers(self.span) if self.span is not None else {}
        return self._trace_headers

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def event_key(self) -> tuple[str, str]:
        """(`source`, `id`): what CloudEvents makes unique, and what the inbox records."""
        return (self.envelope.source, self.envelope.id)


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


# A dead letter carries the original value up to this size (its first bytes beyond it,
# with the original size and digest in headers): a copy plus headers must still fit the
# broker's message size limit, or the relay could not publish it.
DLQ_MAX_VALUE_BYTES = 512 * 1024
DLQ_TRUNCATED_VALUE_BYTES = 64 * 1024
DLQ_MAX_HEADERS = 32


def _storable(text: str, limit: int) -> str:
    """Text PostgreSQL will store (no NUL characters), at most `limit` characters."""
    return text.replace("\x00", "\ufffd")[:limit]


def dead_letter(
    outbox: Outbox, topic: Topic, record: Record, error: str, consumer: str | None = None
) -> None:
    """`record` to `topic`'s `.dlq` twin with why and where from (`consumer`: the service
    that gave up on it, which `perlinsos dlq redrive` hands it back to)."""
    headers = {
        _storable(k, 256): _storable(v, 4096)
        for k, v in list(record_headers(record).items())[:DLQ_MAX_HEADERS]
    }
    value = record.value or b""
    if len(value) > DLQ_MAX_VALUE_BYTES:
        headers["x-dlq-truncated-from"] = str(len(value))
        headers["x-dlq-original-sha256"] = hashlib.sha256(value).hexdigest()
        value = value[:DLQ_TRUNCATED_VALUE_BYTES]
    headers.update(
        {
            "x-dlq-error": _storable(error, 2000),
            "x-dlq-original-topic": record.topic,
            "x-dlq-original-partition": str(record.partition),
            "x-dlq-original-offset": str(record.offset),
            "x-dlq-failed-at": str(int(time.time())),
        }
    )
    if consumer is not None:
        headers["x-dlq-consumer"] = consumer
    key = _storable(record.key.decode(errors="replace"), 1024) if record.key is not None else None
    outbox.add_raw(topic.dlq, key, value, headers)


def decode(record: Record) -> RawEnvelope:
    """Structured or binary mode (CloudEvents Kafka binding): the same envelope."""
    return decode_message(record.value, record.headers)


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
        retry_backoff_max_s: float = 10.0,
    ) -> None:
        self.service = service
        self.topic = topic
        self._pool_getter = pool_getter
        self._handler = handler
        self._on_undecodable = on_undecodable
        self._after_commit = after_commit
        self._max_attempts = max_attempts
        self._retry_backoff_max_s = retry_backoff_max_s
        self._rng = random.Random()
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
                await self._apply(good, bad)
            finally:
                self._close_spans(good)
        self._metrics.batch_duration.record(time.perf_counter() - started, self._labels)
        if self._after_commit:
            self._after_commit()

    def _open_spans(self, messages: list[Incoming]) -> None:
        """One CONSUMER span per message, a child of the span that produced it.

        The span's context is `Incoming.trace_headers`: what the handler writes to the
        outbox for this message carries it, so the next hop continues the same trace.
        Attributes carry only ids that are not personal data (agency reference, participant
        id, decision id), which `perlinsos trace` searches.
        """
        name = f"{self.topic.name} process"
        group = f"perlinsos-{self.service}"
        for m in messages:
            envelope = m.envelope
            attributes: dict[str, Any] = {
                "messaging.system": "kafka",
                "messaging.destination.name": self.topic.name,
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": group,
                "messaging.kafka.destination.partition": m.record.partition,
                "messaging.kafka.offset": m.record.offset,
                "messaging.message.id": envelope.id,
                "cloudevents.event_type": envelope.type,
            }
            attributes.update(correlation_attributes(envelope.data))
            m.span = consumer_spans.start(name, m.headers, attributes=attributes)

    def _close_spans(self, messages: list[Incoming], error: str | None = None) -> None:
        for m in messages:
            if m.span is None:
                continue
            if error:
                m.span.set_status(Status(StatusCode.ERROR, error))
            m.span.end()
            m.span = None

    async def _transaction(self, good: list[Incoming], bad: list[tuple[Record, str]]) -> None:
        async with db.transaction(self._pool_getter()) as conn:
            outbox = Outbox()
            for record, error in bad:
                dead_letter(outbox, self.topic, record, error, self.service)
                if self._on_undecodable:
                    self._on_undecodable(record, error, outbox)
            fresh_keys = await inbox.claim(conn, [m.event_key for m in good])
            fresh: list[Incoming] = []
            for m in good:
                if m.event_key in fresh_keys:
                    fresh.append(m)
                    fresh_keys.discard(m.event_key)  # a repeat inside this batch: duplicate
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

    async def _until_done(
        self,
        work: Callable[[], Awaitable[None]],
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        """Run `work`; while it fails for a `transient` reason, wait and run it again.
        Logged once when the database goes away and once when it is back."""
        failures = 0
        while True:
            try:
                await work()
            except Exception as exc:
                if not transient(exc):
                    raise
                failures += 1
                if failures == 1:
                    log.warning(
                        "database unavailable; the batch waits and is tried again",
                        extra={"topic": self.topic.name, "error": _short_error(exc)},
                    )
                ceiling = min(
                    self._retry_backoff_max_s, RETRY_BACKOFF_INITIAL_S * 2 ** (failures - 1)
                )
                await asyncio.sleep(ceiling * (0.5 + 0.5 * self._rng.random()))
                continue
            if failures:
                log.info(
                    "database back; batch applied",
                    extra={"topic": self.topic.name, "attempts": failures + 1},
                )
            return

    async def _apply(self, good: list[Incoming], bad: list[tuple[Record, str]]) -> None:
        try:
            await self._until_done(lambda: self._transaction(good, bad))
            return
        except Exception as exc:  # a poison message somewhere: find it
            log.warning(
                "batch failed; isolating the message that fails",
                extra={"topic": self.topic.name, "error": _short_error(exc)},
            )
        if bad:
            try:
                await self._until_done(lambda: self._transaction([], bad))
            except Exception:
                for record, error in bad:
                    await self._dead_letter_alone(record, error, None)
        await self._bisect(good, known_to_fail=True)

    async def _bisect(self, messages: list[Incoming], *, known_to_fail: bool = False) -> None:
        """Apply `messages`, halving what fails until the poison message is alone."""
        if not messages:
            return
        if len(messages) == 1:
            await self._apply_alone(messages[0])
            return
        if not known_to_fail:
            try:
                await self._until_done(lambda: self._transaction(messages, []))
                return
            except Exception:
                pass
        half = len(messages) // 2
        await self._bisect(messages[:half])  # in order: a key's events stay in sequence
        await self._bisect(messages[half:])

    async def _apply_alone(self, m: Incoming) -> None:
        error: Exception | None = None
        for _attempt in range(self._max_attempts):
            try:
                await self._until_done(lambda: self._transaction([m], []))
                return
            except Exception as exc:
                error = exc
        assert error is not None
        log.error(
            "message dead-lettered after %d attempts",
            self._max_attempts,
            extra={"event_id": m.id[:64], "topic": self.topic.name, "error": repr(error)},
        )
        if m.span is not None:
            # not record_exception: an exception's text may quote the input
            m.span.add_event(
                "exception",
                {
                    "exception.type": type(error).__name__,
                    "exception.message": _short_error(error),
                },
            )
            m.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            m.span.set_attribute("perlinsos.dead_lettered", True)
        await self._dead_letter_alone(m.record, _short_error(error), m.event_key)

    async def _dead_letter_alone(
        self, record: Record, error: str, event_key: inbox.EventKey | None
    ) -> None:
        """One dead letter in its own transaction, with its inbox row when that can be
        stored (a redelivery then makes no second dead letter); skipped, loudly, if even
        the dead letter is refused for its content, so the partition moves on."""

        async def write() -> None:
            pool = self._pool_getter()
            async with pool.acquire() as conn, conn.transaction():
                outbox = Outbox()
                dead_letter(outbox, self.topic, record, error, self.service)
                await outbox.flush(conn)
                if event_key is not None:
                    try:
                        async with conn.transaction():  # a savepoint
                            await inbox.claim(conn, [event_key], dead_lettered=True)
                    except asyncpg.PostgresError as exc:
                        if is_transient(exc):
                            raise

        try:
            # Only a record the database will not store is skipped; any other failure (the
            # pool closing as the service stops, an error nobody classified) is not this
            # record's fault, and skipping it would lose it: wait and write it again.
            await self._until_done(write, lambda exc: not record_unstorable(exc))
        except Exception as exc:
            log.error(
                "message could not be dead-lettered; skipped",
                extra={
                    "topic": self.topic.name,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error": _short_error(exc),
                },
            )
            return
        self.stats.dead_letters += 1
        self._metrics.dead_letters.add(1, self._labels)


def record_unstorable(exc: BaseException) -> bool:
    """Whether writing a record's dead letter failed because of the record itself: its
    content refused by PostgreSQL (data exceptions, class 22: a character it cannot
    store; integrity, class 23) or by the code building the letter."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("22", "23")
    return isinstance(exc, ValueError | TypeError)


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
