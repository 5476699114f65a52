"""The fault cases: one row each in `CASES`.

A case is a name, a fault kind (the table groups by it), and an async `inject(run, done)`
that runs beside the paced intake and returns how many faults it injected. `done` is set
once every submission has been published; an injector that must outlast the intake
(kills "every few seconds") watches it. The harness resubmits unanswered requests and
compares the end state with a fault-free run of the same submissions.

To add a case: write an injector (or reuse one with other arguments) and add a
`FaultCase` to `CASES`. `sms_provider="twilio"` runs notify against the fake Twilio,
whose `script(...)` takes the provider faults; `check` can add a case-specific check
(it returns "" when it holds, else what went wrong).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from faults.harness import FaultRun
from perlinsos_shared.clock import current_period
from perlinsos_shared.topics import CATALOGUE, INTAKE, INTAKE_REJECTED, Topic

Inject = Callable[[FaultRun, asyncio.Event], Coroutine[Any, Any, int]]
Check = Callable[[FaultRun, int], Awaitable[str]]


@dataclass(frozen=True)
class FaultCase:
    name: str
    kind: str
    inject: Inject
    sms_provider: str = "file"
    check: Check | None = None
    env: dict[str, str] = field(default_factory=dict)
    short: bool = False  # part of the short suite (`--faults-short`)


# ------------------------------------------------------------------ process kills


async def kill_random_services(
    run: FaultRun, done: asyncio.Event, *, every_s: float = 3.0, at_least: int = 20
) -> int:
    """SIGKILL a random ready service every `every_s`, until the intake is done and at
    least `at_least` kills happened; the stack's supervisor brings each one back."""
    rng = random.Random(11)
    kills = 0
    while kills < at_least or not done.is_set():
        await asyncio.sleep(every_s)
        ready = [s for s in run.stack.services if s.ready and s.process.poll() is None]
        if not ready:
            continue
        victim = rng.choice(ready)
        os.kill(victim.process.pid, signal.SIGKILL)
        kills += 1
    return kills


async def kill_each_service_and_the_broker(run: FaultRun, done: asyncio.Event) -> int:
    """SIGKILL every service once, one after another, then the broker (the short case)."""
    kills = 0
    await asyncio.sleep(2.0)
    for svc in list(run.stack.services):
        os.kill(svc.process.pid, signal.SIGKILL)
        kills += 1
        await asyncio.sleep(1.0)
    await _until_services_ready(run)
    kills += await kill_broker(run, done, at_s=0.0)
    return kills


async def _until_services_ready(run: FaultRun, timeout: float = 300) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if run.settled_services():
            return
        await asyncio.sleep(0.5)


async def kill_broker(
    run: FaultRun, done: asyncio.Event, *, at_s: float = 8.0, times: int = 1
) -> int:
    """SIGKILL the embedded broker (it comes back empty) `times` times."""
    kills = 0
    for _ in range(times):
        await asyncio.sleep(at_s)
        assert run.stack.kafka is not None
        pid = run.stack.kafka.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            kills += 1
        await asyncio.sleep(2.0)
        await _until_services_ready(run)
    return kills


# ------------------------------------------------------------------ PostgreSQL


async def cut_postgres(run: FaultRun, done: asyncio.Event, *, at_s: float = 8.0,
                       for_s: float = 30.0) -> int:  # fmt: skip
    """Every connection between the services and PostgreSQL broken, new ones refused,
    for `for_s` seconds."""
    assert run.proxy is not None
    await asyncio.sleep(at_s)
    await asyncio.to_thread(run.proxy.cut)
    try:
        await asyncio.sleep(for_s)
    finally:
        await asyncio.to_thread(run.proxy.restore)
    return 1


async def kill_postgres(run: FaultRun, done: asyncio.Event, *, at_s: float = 8.0) -> int:
    """SIGKILL the postmaster; the supervisor starts it again on the same data directory
    (crash recovery)."""
    await asyncio.sleep(at_s)
    assert run.stack.postgres is not None
    pid = run.stack.postgres.pid
    if pid is None:
        return 0
    os.kill(pid, signal.SIGKILL)
    return 1


# ------------------------------------------------------------------ SMS provider


async def provider_faults(run: FaultRun, done: asyncio.Event, *, every: int = 5) -> int:
    """The fake Twilio answers 500, 429, and takes a message then cuts the connection
    before answering, in turn, on one POST in `every`."""
    assert run.twilio is not None
    kinds = ("500", "429", "drop-after")
    script: list[str] = []
    n = 0
    for i in range(3000):
        if i % every == every - 1:
            script.append(kinds[n % len(kinds)])
            n += 1
        else:
            script.append("ok")
    run.twilio.script(script)
    await done.wait()
    served = [r for r in run.twilio.requests if r.fault in kinds]
    return len(served)


# ------------------------------------------------------------------ poison


def _consumed_topics() -> list[Topic]:
    services = {"registry", "eligibility", "premium", "notify"}
    return [t for t in CATALOGUE if services & set(t.consumers)]


def _poison_values(topic: Topic, size_limit: int) -> list[bytes]:
    base = {
        "specversion": "1.0",
        "source": "agency/POISON",
        "type": "perlinsos.enrolment.submitted.v1"
        if topic.name == "registry.intake.v1"
        else "perlinsos.unknown.v1",
        "time": "2026-11-01T00:00:00+07:00",
        "datacontenttype": "application/json",
    }
    wrong_type = {**base, "id": str(uuid.uuid4()), "data": {"nik": 3171, "agency": ["POISON"],
                  "request_id": {"x": 1}, "birth_date": 12}}  # fmt: skip
    long_id = {**base, "id": "x" * 4096, "data": {"agency": "POISON"}}
    big = {**base, "id": str(uuid.uuid4()), "data": {"agency": "POISON", "pad": ""}}
    pad = size_limit - len(orjson.dumps(big)) - 1024
    big["data"] = {"agency": "POISON", "pad": "x" * max(0, pad)}
    return [b"\x00not json{", orjson.dumps(wrong_type), orjson.dumps(long_id), orjson.dumps(big)]


def _replied_to_poison(value: bytes | None) -> bool:
    try:
        data = orjson.loads(value or b"").get("data") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return isinstance(data, dict) and data.get("agency") == "POISON"


POISON_SIZE_LIMIT = 1_000_000  # the producer's default max request size, about 1 MB


async def poison_every_topic(run: FaultRun, done: asyncio.Event, *, at_s: float = 5.0) -> int:
    """Not JSON, wrong types, a 4 KB id, and a value near the size limit, on every topic
    a service consumes, in the middle of the intake."""
    await asyncio.sleep(at_s)
    producer = AIOKafkaProducer(
        bootstrap_servers=run.bootstrap, max_request_size=POISON_SIZE_LIMIT + 64 * 1024
    )
    await producer.start()
    sent = 0
    try:
        for topic in _consumed_topics():
            for value in _poison_values(topic, POISON_SIZE_LIMIT):
                await producer.send_and_wait(topic.name, value, key=b"POISON")
                sent += 1
    finally:
        await producer.stop()
    return sent


async def poison_dead_lettered(run: FaultRun, injected: int) -> str:
    """Each poison message is handled: on its topic's dead-letter twin (at least once), or,
    on intake, answered to the agency on the reply topic with reason codes."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=run.bootstrap,
        auto_offset_reset="earliest",
        fetch_max_bytes=4 * 1024 * 1024,
        max_partition_fetch_bytes=2 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = [TopicPartition(t.dlq, p) for t in _consumed_topics() for p in range(t.partitions)]
        parts += [
            TopicPartition(INTAKE_REJECTED.name, p) for p in range(INTAKE_REJECTED.partitions)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        per_topic: dict[str, int] = {}
        refused = 0
        quiet = 0
        while quiet < 3:
            batches = await consumer.getmany(timeout_ms=700)
            quiet = 0 if batches else quiet + 1
            for tp, records in batches.items():
                if tp.topic == INTAKE_REJECTED.name:
                    # A message that decodes but is wrong is answered with reason codes
                    # (registry tells agency POISON) rather than dead-lettered.
                    refused += sum(1 for r in records if _replied_to_poison(r.value))
                else:
                    per_topic[tp.topic] = per_topic.get(tp.topic, 0) + len(records)
    finally:
        await consumer.stop()
    handled = dict(per_topic)
    handled[INTAKE.dlq] = handled.get(INTAKE.dlq, 0) + refused
    expected_per_topic = injected // max(1, len(_consumed_topics()))
    short = {t.dlq: handled.get(t.dlq, 0) for t in _consumed_topics()
             if handled.get(t.dlq, 0) < expected_per_topic}  # fmt: skip
    if short:
        return (
            f"dead-lettered per topic {per_topic}, refused at intake {refused}; "
            f"expected at least {expected_per_topic} per topic"
        )
    return ""


# ------------------------------------------------------------------ operations (issue 12)


async def provider_down(run: FaultRun, done: asyncio.Event, *, at_s: float = 5.0,
                        for_s: float = 60.0) -> int:  # fmt: skip
    """The SMS provider answers every POST 503 for `for_s` seconds (retried, capped backoff,
    nothing lost)."""
    assert run.twilio is not None
    await asyncio.sleep(at_s)
    run.twilio.down = True
    try:
        await asyncio.sleep(for_s)
    finally:
        run.twilio.down = False
    return sum(1 for r in run.twilio.requests if r.method == "POST" and r.status == 503)


async def slow_provider_two_instances(
    run: FaultRun, done: asyncio.Event, *, latency_s: float = 5.0, after_s: float = 30.0
) -> int:
    """Every answer takes `latency_s` while a second notify instance runs beside the first,
    both behind the case's rate limit: claims wait in their queues far longer than the
    lease, and no instance takes over another's."""
    assert run.twilio is not None
    run.twilio.latency_s = latency_s
    env = {**run.extra_env, **run.twilio.env()}
    await asyncio.to_thread(run.stack.start_services, ("notify",), timeout=180, extra_env=env)
    await done.wait()
    await asyncio.sleep(after_s)
    run.twilio.latency_s = 0.0
    return sum(1 for r in run.twilio.requests if r.method == "POST")


async def list_failing_answers_lost(
    run: FaultRun, done: asyncio.Event, *, every: int = 7, after_s: float = 30.0
) -> int:
    """One POST in `every` is taken and its answer lost (connection cut) while the
    provider's message list answers 500: those sends stay unconfirmed, never resent
    blindly, until the list answers again."""
    assert run.twilio is not None
    run.twilio.list_failing = True
    run.twilio.script(["drop-after" if i % every == every - 1 else "ok" for i in range(3000)])
    await done.wait()
    await asyncio.sleep(after_s)
    run.twilio.list_failing = False
    return sum(1 for r in run.twilio.requests if r.fault == "drop-after")


async def _premium(run: FaultRun, sql: str, *args: Any) -> str:
    conn = await asyncpg.connect(run.database_url, server_settings={"search_path": "premium"})
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


async def roll_racing_batches(run: FaultRun, done: asyncio.Event, *, every_s: float = 0.5) -> int:
    """Premium's month roll (every 0.5 s here) made to roll the current month again and
    again while decision batches bill it: nothing billed twice or missed."""
    rolls = 0
    again = "DELETE FROM rolled_periods WHERE period = $1"
    while not done.is_set():
        await asyncio.sleep(every_s)
        rolls += int((await _premium(run, again, current_period())).split()[-1])
    return rolls


REDRIVE_LINE = "PERWAKO-3-2023"


async def dead_letters_redriven(run: FaultRun, done: asyncio.Event, *, at_s: float = 5.0) -> int:
    """Premium's rate table loses one funding line's rows: its decisions fail alone and are
    dead-lettered. The rows come back, and `perlinsos dlq redrive` sends the dead letters
    again, twice: the ledger ends as if nothing had happened."""
    from perlinsos_cli.dlq import redrive_dead_letters
    from perlinsos_shared.settings import Settings
    from perlinsos_shared.topics import DECISIONS

    await asyncio.sleep(at_s)
    conn = await asyncpg.connect(run.database_url, server_settings={"search_path": "premium"})
    try:
        rates = await conn.fetch("SELECT * FROM rates WHERE funding_line = $1", REDRIVE_LINE)
        await conn.execute("DELETE FROM rates WHERE funding_line = $1", REDRIVE_LINE)
        await done.wait()
        await asyncio.sleep(20.0)  # the last decisions consumed (and dead-lettered)
        await conn.executemany(
            "INSERT INTO rates (funding_line, component, amount_idr, valid_from, valid_to)"
            " VALUES ($1, $2, $3, $4, $5)",
            [
                (r["funding_line"], r["component"], r["amount_idr"], r["valid_from"], r["valid_to"])
                for r in rates
            ],
        )
    finally:
        await conn.close()
    settings = Settings().model_copy(
        update={
            "kafka_bootstrap_servers": run.bootstrap,
            "database_url": run.database_url,
            "kafka_idempotent": False,  # the embedded broker
        }
    )
    first = await redrive_dead_letters(settings, DECISIONS.name)
    await asyncio.sleep(10.0)
    second = await redrive_dead_letters(settings, DECISIONS.name)  # changes nothing
    return len(first.sent) + len(second.sent)


# ------------------------------------------------------------------ the table

CASES: list[FaultCase] = [
    FaultCase(
        "kill -9 a random service every 3 s (>= 20 kills)",
        "service killed",
        kill_random_services,
    ),
    FaultCase(
        "kill -9 each service, then the broker",
        "service and broker killed",
        kill_each_service_and_the_broker,
        short=True,
    ),
    FaultCase("PostgreSQL unreachable for 30 s", "PostgreSQL unreachable", cut_postgres),
    FaultCase("PostgreSQL killed and restarted", "PostgreSQL restarted", kill_postgres),
    FaultCase("broker killed, restarted empty", "broker restarted empty", kill_broker),
    FaultCase(
        "SMS provider: 500, 429, taken then connection cut",
        "SMS provider faults",
        provider_faults,
        sms_provider="twilio",
    ),
    FaultCase(
        "SMS provider down (every POST 503) for 60 s",
        "SMS provider down",
        provider_down,
        sms_provider="twilio",
    ),
    FaultCase(
        "SMS provider 5 s slow, two notify instances, 20/s rate limit",
        "SMS provider slow",
        slow_provider_two_instances,
        sms_provider="twilio",
        env={"SMS_RATE_LIMIT_PER_S": "20"},
    ),
    FaultCase(
        "SMS provider list failing while answers are lost",
        "SMS list failing",
        list_failing_answers_lost,
        sms_provider="twilio",
    ),
    FaultCase(
        "premium month roll racing decision batches",
        "month roll racing",
        roll_racing_batches,
        env={"PERLINSOS_PREMIUM_ROLL_INTERVAL_S": "0.5"},
    ),
    FaultCase(
        "dead letters redriven (twice) after their cause is fixed",
        "dead letters redriven",
        dead_letters_redriven,
    ),
    FaultCase(
        "poison on every consumed topic",
        "poison",
        poison_every_topic,
        check=poison_dead_lettered,
    ),
]

# Selecting one case by a short id on the command line: `-k broker`, `-k poison`, ...
CASE_IDS = [re.sub(r"[^a-z0-9]+", "-", c.kind.lower()).strip("-") for c in CASES]
