"""The floor: what the same message path costs with nothing but the essentials.

N JSON events (the cohort's own submissions, as CloudEvents) go through 4 hops. Each hop
is a process of its own with bare aiokafka: it reads a batch, decodes every event's JSON,
COPYs one row per event into PostgreSQL in one transaction per batch, produces the next
event (a new CloudEvent carrying the same data) and commits its offsets. The clock runs
from the first publish until the last hop's output holds every event: what a system of
four services could reach on this broker, this PostgreSQL and this machine if it did
nothing else (no validation, no outbox, no inbox, no spans).

    python -m benchmarks.floor hop SOURCE TARGET TABLE   (one hop; the driver starts them)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

HOPS = 4
BATCH = 2000
DATABASE = "bench_floor"


async def _hop(bootstrap: str, dsn: str, source: str, target: str, table: str) -> None:
    conn = await asyncpg.connect(dsn)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"floor-{source}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=BATCH,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    print("ready", flush=True)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            rows = []
            out = []
            for r in records:
                event = orjson.loads(r.value)
                rows.append(
                    (event["id"], r.partition, r.offset, orjson.dumps(event["data"]).decode())
                )
                nxt = {**event, "id": str(uuid.uuid4()), "source": table}
                out.append((r.key, orjson.dumps(nxt)))
            async with conn.transaction():
                await conn.copy_records_to_table(
                    table, records=rows, columns=("event_id", "part", "position", "data")
                )
            sent = [await producer.send(target, value, key=key) for key, value in out]
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await conn.close()


async def _prepare(
    bootstrap: str, admin_dsn: str, run: str, partitions: int
) -> tuple[list[str], str]:
    """Topics floor.<run>.0..4 (as many partitions as the system's topics on the same broker)
    and a database of its own with one table per hop."""
    topics = [f"bench.floor.{run}.{i}" for i in range(HOPS + 1)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + DATABASE
    conn = await asyncpg.connect(dsn)
    try:
        for i in range(1, HOPS + 1):
            await conn.execute(
                f"DROP TABLE IF EXISTS hop{i}; CREATE TABLE hop{i} (event_id text PRIMARY KEY,"
                " part int NOT NULL, position bigint NOT NULL, data jsonb NOT NULL)"
            )
    finally:
        await conn.close()
    return topics, dsn


async def _publish_and_wait(
    bootstrap: str,
    first: str,
    last: str,
    events: Sequence[bytes],
    keys: Sequence[bytes],
    timeout: float,
    hops: Sequence[subprocess.Popen[str]],
    partitions: int,
) -> float:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    parts = [TopicPartition(last, p) for p in range(partitions)]
    reader.assign(parts)
    await reader.seek_to_beginning(*parts)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [await producer.send(first, v, key=k) for k, v in zip(keys, events, strict=True)]
        await asyncio.gather(*pending)
        seen = 0
        while seen < len(events):
            batches = await reader.getmany(timeout_ms=100, max_records=20000)
            seen += sum(len(rs) for rs in batches.values())
            if any(h.poll() is not None for h in hops):
                raise RuntimeError("floor: a hop exited (its error is above)")
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"floor: {seen}/{len(events)} through after {timeout:.0f}s")
        return time.perf_counter() - started
    finally:
        await producer.stop()
        await reader.stop()


def run_floor(
    bootstrap: str,
    admin_dsn: str,
    events: Sequence[bytes],
    keys: Sequence[bytes],
    run: str,
    partitions: int,
    timeout: float = 600,
) -> dict[str, float | int]:
    """Time `events` through the 4 hops, each topic with `partitions` partitions; the hop
    processes are started and stopped here."""
    topics, dsn = asyncio.run(_prepare(bootstrap, admin_dsn, run, partitions))
    hops = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.floor",
                "hop",
                bootstrap,
                dsn,
                topics[i - 1],
                topics[i],
                f"hop{i}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(1, HOPS + 1)
    ]
    try:
        for h in hops:
            assert h.stdout is not None
            if h.stdout.readline().strip() != "ready":
                raise RuntimeError("a floor hop did not start")
        seconds = asyncio.run(
            _publish_and_wait(
                bootstrap, topics[0], topics[-1], events, keys, timeout, hops, partitions
            )
        )
    finally:
        for h in hops:
            h.terminate()
        for h in hops:
            try:
                h.wait(10)
            except subprocess.TimeoutExpired:
                h.kill()
                h.wait()
    rows = asyncio.run(_count(dsn))
    if rows != len(events):
        raise RuntimeError(f"floor: hop tables hold {rows} rows, not {len(events)}")
    return {
        "events": len(events),
        "hops": HOPS,
        "partitions": partitions,
        "seconds": round(seconds, 2),
        "events_per_s": round(len(events) / seconds),
    }


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM hop{HOPS}"))
    finally:
        await conn.close()


def main(argv: list[str]) -> None:
    if len(argv) != 6 or argv[0] != "hop":
        raise SystemExit("usage: python -m benchmarks.floor hop BOOTSTRAP DSN SOURCE TARGET TABLE")
    try:
        asyncio.run(_hop(*argv[1:]))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
