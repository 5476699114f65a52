"""The runtime every service shares: broker, database pool, outbox relay, health.

A service module declares its subscriptions with `ServiceRuntime.consume(...)`, its
background loops with `ServiceRuntime.background(...)`, and runs with `runtime.run()`;
FastStream owns the lifecycle and signals.

Every background loop (the outbox relay, the metric sampler and each registered loop)
runs under one `Supervisor`: a loop lets its exceptions escape and is started again with
backoff. `/readyz` is computed on every request from what is true now (startup done, no
loop failing, every consumer polled the broker within `PERLINSOS_CONSUMER_STALL_S`);
`/livez` fails only when the event loop itself is stuck (see `health.py`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from itertools import chain
from typing import Any

import asyncpg
import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.errors import IllegalStateError, KafkaError
from faststream import FastStream
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from opentelemetry import context as otel_context

from perlinsos_shared import memdiag
from perlinsos_shared.consumer import BatchConsumer, Handler, UndecodableHook
from perlinsos_shared.db import open_service_db, refuse_privileged_login
from perlinsos_shared.gc_tuning import tune_gc
from perlinsos_shared.health import HealthServer, Readiness
from perlinsos_shared.kafka import make_broker, make_producer
from perlinsos_shared.logs import setup_logging
from perlinsos_shared.malloc_tuning import trim, tune_malloc
from perlinsos_shared.metrics import platform, setup_metrics
from perlinsos_shared.outbox import OutboxRelay
from perlinsos_shared.retention import prune_forever
from perlinsos_shared.settings import Settings, get_settings
from perlinsos_shared.supervisor import LoopFn, Supervisor
from perlinsos_shared.telemetry import instrument_clients, setup_tracing
from perlinsos_shared.topics import Topic

log = logging.getLogger("perlinsos.service")

# How often the outbox backlog and idle consumers' lag are sampled for /metrics.
SAMPLE_INTERVAL_S = 5.0


async def _raw_bodies(msg: StreamMessage[Any]) -> Any:
    """Leave bodies undecoded: the consumer decodes (and dead-letters) itself."""
    return msg.body


class ServiceRuntime:
    def __init__(self, name: str, settings: Settings | None = None) -> None:
        self.name = name
        self.settings = settings or get_settings()
        tune_malloc()  # before any thread starts: see malloc_tuning
        memdiag.start_tracing()  # PERLINSOS_MEMDIAG_EVERY_S set: finding a leak
        setup_logging(name)
        self.tracer_provider = setup_tracing(name, self.settings)
        instrument_clients(self.tracer_provider)
        self.meter_provider, metrics_endpoint = setup_metrics(name, self.settings)
        self.metrics = platform()
        self.broker = make_broker(
            self.settings,
            client_id=f"perlinsos-{name}",
            middlewares=[
                KafkaTelemetryMiddleware(
                    tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
                )
            ],
            # FastStream's own lines go through the JSON formatter; per-batch access
            # lines are debug-level (spans and counters carry that information).
            logger=logging.getLogger("perlinsos.broker"),
            log_level=logging.DEBUG,
        )
        self.app = FastStream(self.broker, logger=logging.getLogger("perlinsos.app"))
        self._kafka_consumer: Any = None  # the service's one Kafka consumer, once polled
        self._subscribed = False
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[BatchConsumer] = []
        self._startup: list[Callable[[asyncpg.Pool], Awaitable[None]]] = []
        self._background: list[tuple[str, LoopFn]] = []
        self._started = False
        self._stopping = False
        self.supervisor = Supervisor(
            name,
            backoff_initial_s=self.settings.loop_backoff_initial_s,
            backoff_max_s=self.settings.loop_backoff_max_s,
            healthy_after_s=self.settings.loop_healthy_after_s,
        )
        self.health = HealthServer(
            name,
            self.settings.metrics_port,
            liveness_stall_s=self.settings.liveness_stall_s,
            startup_deadline_s=self.settings.startup_deadline_s,
        )
        self.health.metrics_text = metrics_endpoint.render
        self.health.readiness = self.readiness
        self.app.on_startup(self._on_startup)
        self.app.after_startup(self._after_startup)
        self.app.on_shutdown(self._on_shutdown)
        self.app.after_shutdown(self._after_shutdown)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database pool not open yet")
        return self._pool

    def on_startup(self, fn: Callable[[asyncpg.Pool], Awaitable[None]]) -> None:
        self._startup.append(fn)

    def background(
        self, fn: Callable[[], Coroutine[Any, Any, None]], *, name: str | None = None
    ) -> None:
        """A loop to run beside the consumers, supervised (started after the broker,
        stopped at shutdown). Let exceptions escape: the supervisor logs them once, waits
        with backoff and starts the loop again, and `/readyz` fails meanwhile."""
        self._background.append((name or _loop_name(fn), fn))

    def readiness(self) -> Readiness:
        """Computed on every `/readyz` (from the health server's thread: reads only)."""
        reasons: list[str] = []
        if self._stopping:
            reasons.append("stopping")
        elif not self._started:
            reasons.append(f"starting: {self.health.startup_step}")
        reasons += [f"loop {name} failing" for name in self.supervisor.failing()]
        for consumer in list(self.consumers):
            idle = consumer.since_poll_s()
            if idle > self.settings.consumer_stall_s:
                reasons.append(f"consumer of {consumer.topic.name} has not polled for {idle:.0f}s")
        return Readiness(not reasons, reasons)

    def consume(
        self,
        topic: Topic,
        handler: Handler,
        *,
        on_undecodable: UndecodableHook | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> BatchConsumer:
        """Consume `topic` in batches with `handler`; after each batch's transaction has
        committed the outbox relay is woken, and `after_commit` called (e.g. to wake a loop
        that works on what the batch wrote: woken earlier it would not see the rows yet).

        All the topics a service consumes share one Kafka consumer (`_subscribe`): one
        fetch loop, one group member; each topic keeps its own `BatchConsumer`."""

        def committed() -> None:
            self._wake_relay()
            if after_commit is not None:
                after_commit()

        if self._subscribed:
            raise RuntimeError("consume() after start-up: declare every topic in build()")
        if any(c.topic.name == topic.name for c in self.consumers):
            raise ValueError(f"{topic.name} is consumed twice")
        consumer = BatchConsumer(
            service=self.name,
            topic=topic,
            pool_getter=lambda: self.pool,
            handler=handler,
            on_undecodable=on_undecodable,
            after_commit=committed,
            max_attempts=self.settings.handler_max_attempts,
            retry_backoff_max_s=self.settings.consumer_retry_backoff_max_s,
        )
        self.consumers.append(consumer)
        return consumer

    def _subscribe(self) -> None:
        """One FastStream batch subscriber, so one Kafka consumer, for every topic the
        service consumes (at start-up, once `consume` has been called for each).

        One consumer per topic cost a fetch loop, fetch requests and heartbeats each, and
        several members of one group in one process rebalanced each other on start and
        whenever one of them stalled. A fetch's records are split by topic and each
        topic's go to its own `BatchConsumer`, the topics' transactions side by side
        (`dispatch`); the offsets are committed once all of them have committed."""
        if self._subscribed or not self.consumers:
            return
        self._subscribed = True
        names = [c.topic.name for c in self.consumers]
        subscriber = self.broker.subscriber(
            *names,
            group_id=f"perlinsos-{self.name}",
            batch=True,
            max_records=self.settings.consumer_max_records,
            batch_timeout_ms=self.settings.consumer_batch_timeout_ms,
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
            max_partition_fetch_bytes=self.settings.consumer_max_partition_fetch_bytes,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=max(500, self.settings.consumer_session_timeout_ms // 4),
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_raw_bodies,
            title=f"{self.name}:{','.join(names)}",
        )
        timeout_ms = self.settings.consumer_batch_timeout_ms
        max_records = self.settings.consumer_max_records
        consumers = list(self.consumers)

        async def get_msg(kafka_consumer: Any) -> Any:
            """FastStream's batch poll without its pause after an empty poll: `getmany`
            returns as soon as records are there, else after `timeout_ms`."""
            for consumer in consumers:
                consumer.note_poll()  # readiness: this consumer is not stuck
            batches = await kafka_consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            return tuple(chain.from_iterable(batches.values()))

        setattr(subscriber, "get_msg", get_msg)  # noqa: B010 - an instance attribute

        @subscriber
        async def _subscriber(body: Any, message: KafkaMessage) -> None:
            self._kafka_consumer = message.consumer
            await in_own_context(dispatch(consumers, message.raw_message, message.consumer))

    def _wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def _publish(
        self, topic: str, key: str | None, value: bytes, headers: dict[str, str]
    ) -> Any:
        """Hand one record to the relay's producer; returns the delivery future."""
        assert self._producer is not None
        return await self._producer.send(
            topic,
            value,
            key=key.encode() if key is not None else None,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    async def _on_startup(self) -> None:
        # health first: a start that hangs anywhere below fails /livez at its deadline
        await self.health.start()
        self._starting("database")
        if not self.settings.database_url:
            raise RuntimeError("DATABASE_URL is not set: start with `perlinsos up` or set it")
        await refuse_privileged_login(self.settings.database_url, self.name)
        self._pool = await open_service_db(
            self.settings.database_url, self.name, pool_size=self.settings.db_pool_size
        )
        self._starting("start-up checks")
        for fn in self._startup:
            await fn(self._pool)
        self._starting("outbox producer")
        self._producer = make_producer(self.settings, client_id=f"perlinsos-{self.name}-relay")
        await self._producer.start()
        self.relay = OutboxRelay(
            self._pool, self.name, self._publish, batch_size=self.settings.outbox_batch_size
        )
        # FastStream starts the subscriber next: the consumer joins its group and waits
        # for its partitions
        self._subscribe()
        self._starting("consumers joining their groups")

    def _starting(self, step: str) -> None:
        self.health.starting(step)
        log.info("starting: %s", step, extra={"service": self.name})

    async def _after_startup(self) -> None:
        assert self.relay is not None
        tune_gc()
        self.supervisor.start("outbox-relay", self.relay.run, on_stop=self.relay.stop)
        for name, fn in self._background:
            self.supervisor.start(name, fn)
        self.supervisor.start("metrics-sampler", self._sample_loop)
        self.supervisor.start("retention", self._retention_loop)
        if every_s := memdiag.enabled():
            state_dir = self.settings.state_dir

            async def memory_reports() -> None:
                await memdiag.report_forever(self.name, state_dir, every_s)

            self.supervisor.start("memory-diagnostics", memory_reports)
        for consumer in self.consumers:
            consumer.note_poll()
        self.health.started()
        self._started = True
        log.info("service ready", extra={"service": self.name})

    async def _on_shutdown(self) -> None:
        """Before FastStream stops the consumer: the loops stop (the relay among them)."""
        self._stopping = True
        await self.supervisor.stop()
        await self.health.stop()

    async def _after_shutdown(self) -> None:
        """After FastStream has stopped the consumer (a batch in flight is cancelled and
        rolled back, its offsets not committed): only then the pool closes. Closed before,
        a batch in flight failed on the closing pool, and each of its messages was taken
        for poison and skipped."""
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    async def _retention_loop(self) -> None:
        """Old published outbox rows and inbox ids deleted (retention.py)."""
        await prune_forever(self.pool, self.settings.retention_days)

    async def _sample_loop(self) -> None:
        """Outbox backlog and age, and lag of partitions with no new batch, for /metrics.
        The database being away escapes (the supervisor reports it)."""
        while True:
            await self.sample_metrics()
            trim()  # what the last batches freed goes back to the system
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def sample_metrics(self) -> None:
        if self.relay is not None:
            backlog, age = await self.relay.backlog_and_age()
            self.metrics.outbox_backlog, self.metrics.outbox_oldest_age_s = backlog, age
        kafka_consumer = self._kafka_consumer
        if kafka_consumer is None:
            return
        topics = {c.topic.name for c in self.consumers}
        assigned = {tp for tp in kafka_consumer.assignment() if tp.topic in topics}
        for key in list(self.metrics.lag):
            if key[0] in topics and not any(
                tp.topic == key[0] and tp.partition == key[1] for tp in assigned
            ):
                del self.metrics.lag[key]  # revoked: another instance reports it
        for tp in assigned:
            high = kafka_consumer.highwater(tp)
            try:
                position = await asyncio.wait_for(kafka_consumer.position(tp), timeout=2)
            except (TimeoutError, KafkaError, IllegalStateError):
                continue  # revoked meanwhile or the broker away: the next sample tells
            if high is not None and position is not None:
                self.metrics.lag[(tp.topic, tp.partition)] = max(0, high - position)

    def run(self) -> None:
        """Until stopped, on uvloop's event loop (libuv): the loop's own rounds, socket
        reads and writes and timers cost a fraction of asyncio's pure-Python loop, which
        took 15-25% of every service's samples at a steady rate (the same asyncio API:
        asyncpg, aiokafka, aiohttp and FastStream run on it unchanged)."""
        uvloop.run(self.app.run())


async def dispatch(
    consumers: Sequence[BatchConsumer], records: Sequence[Any], kafka_consumer: Any
) -> None:
    """One fetch's records, split by topic, each topic's to its own consumer (in fetch
    order, so per partition in offset order), the topics side by side: each its own
    transaction, as when every topic had a Kafka consumer of its own. Returns once all of
    them are done; the first exception (only a bug or a cancellation: a batch's own
    failures are handled inside it) is raised after the others have finished, so the
    fetch is not redelivered while part of it is still being applied."""
    by_topic: dict[str, list[Any]] = {}
    for record in records:
        by_topic.setdefault(record.topic, []).append(record)
    work = [(c, by_topic[c.topic.name]) for c in consumers if c.topic.name in by_topic]
    unknown = by_topic.keys() - {c.topic.name for c in consumers}
    if unknown:  # not subscribed: cannot happen, and must not pass unnoticed
        raise RuntimeError(f"records of topics not consumed here: {sorted(unknown)}")

    async def one(consumer: BatchConsumer, batch: list[Any]) -> None:
        await consumer.process(batch)
        consumer.note_positions(kafka_consumer, batch)

    if len(work) == 1:
        await one(*work[0])
        return
    results = await asyncio.gather(*(one(c, b) for c, b in work), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def in_own_context(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` in a context of its own that carries over only the trace context.

    A timer or callback scheduled while a batch is handled keeps the context it was
    scheduled in, and FastStream's context holds the batch's message (up to 2,000
    records): asyncpg's statement cache arms a 5-minute timer per statement it prepares
    and its pool one per connection released, so each pinned a batch for minutes, and
    after a burst four to ten batches of every consumer stayed resident."""
    own = contextvars.Context()
    own.run(otel_context.attach, otel_context.get_current())
    await asyncio.create_task(work, context=own)


def _loop_name(fn: Callable[..., Any]) -> str:
    """`Sender.run` for a bound method, the function's name otherwise (a metric label)."""
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", type(fn).__name__)
    return f"{type(owner).__name__}.{name}" if owner is not None else name
