"""Embedded runtime: Tansu broker + PostgreSQL as child processes, no Docker."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from perlinsos_devruntime.embedded import EmbeddedKafka, EmbeddedStack, free_port, port_is_listening

pytestmark = pytest.mark.flow


def _new_stack(state_dir: Path) -> EmbeddedStack:
    return EmbeddedStack(state_dir, kafka_port=free_port(), pg_port=free_port())


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    """Postgres processes (postmaster or backends) still bound to ``data_dir``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if str(data_dir) in cmdline:
            found.append(proc)
    return found


def _assert_stopped(
    stack: EmbeddedStack, kafka_pid: int, pg_pid: int, pg_children: list[psutil.Process]
) -> None:
    assert stack.kafka.pid is None
    assert stack.postgres.pid is None
    assert not port_is_listening("127.0.0.1", stack.kafka.port)
    assert not port_is_listening("127.0.0.1", stack.postgres.port)
    assert not psutil.pid_exists(kafka_pid)
    assert not psutil.pid_exists(pg_pid)
    assert not any(child.is_running() for child in pg_children)
    assert _processes_using(stack.postgres.data_dir) == []


async def test_stack_produce_consume_and_query(tmp_path: Path) -> None:
    stack = _new_stack(tmp_path / "state")
    await asyncio.to_thread(stack.start)
    try:
        kafka_pid, pg_pid = stack.kafka.pid, stack.postgres.pid
        assert kafka_pid is not None and pg_pid is not None
        assert psutil.pid_exists(kafka_pid) and psutil.pid_exists(pg_pid)
        assert stack.kafka.bootstrap_servers == f"127.0.0.1:{stack.kafka.port}"
        assert stack.postgres.admin_url.endswith(f"127.0.0.1:{stack.postgres.port}/perlinsos")

        # start() is idempotent: same processes afterwards.
        await asyncio.to_thread(stack.start)
        assert (stack.kafka.pid, stack.postgres.pid) == (kafka_pid, pg_pid)

        topic = f"embedded.test.{uuid.uuid4().hex[:8]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(name=topic, num_partitions=3, replication_factor=1)]
            )
        finally:
            await admin.close()

        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers)
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, b"hello batam", key=b"nik-1")
        finally:
            await producer.stop()
        assert 0 <= meta.partition < 3

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack.bootstrap_servers,
            group_id=f"embedded-test-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # Tansu holds the first JoinGroup for ~session_timeout/2 (5s by default).
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await consumer.stop()
        assert (msg.key, msg.value, msg.partition) == (b"nik-1", b"hello batam", meta.partition)

        conn = await asyncpg.connect(stack.admin_url)
        try:
            assert await conn.fetchval("select 1") == 1
            assert await conn.fetchval("select current_database()") == "perlinsos"
            assert await conn.fetchval("show fsync") == "on"
            assert await conn.fetchval("show synchronous_commit") == "on"
        finally:
            await conn.close()

        pg_children = psutil.Process(pg_pid).children(recursive=True)
        assert pg_children, "postmaster should have auxiliary processes"
    finally:
        await asyncio.to_thread(stack.stop)

    _assert_stopped(stack, kafka_pid, pg_pid, pg_children)
    # stop() is idempotent too.
    await asyncio.to_thread(stack.stop)


async def test_postgres_data_persists_across_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"

    with _new_stack(state_dir) as first:
        conn = await asyncpg.connect(first.admin_url)
        try:
            await conn.execute("create table beneficiary (nik text primary key, name text)")
            await conn.execute("insert into beneficiary values ('2171010101010001', 'Siti')")
        finally:
            await conn.close()
        first_pids = (first.kafka.pid, first.postgres.pid)
    assert first.postgres.pid is None
    assert not port_is_listening("127.0.0.1", first.postgres.port)

    second = _new_stack(state_dir)
    await asyncio.to_thread(second.start)
    try:
        assert (second.kafka.pid, second.postgres.pid) != first_pids
        conn = await asyncpg.connect(second.admin_url)
        try:
            name = await conn.fetchval(
                "select name from beneficiary where nik = '2171010101010001'"
            )
        finally:
            await conn.close()
        assert name == "Siti"
        kafka_pid, pg_pid = second.kafka.pid, second.postgres.pid
        assert kafka_pid is not None and pg_pid is not None
        pg_children = psutil.Process(pg_pid).children(recursive=True)
    finally:
        await asyncio.to_thread(second.stop)
    _assert_stopped(second, kafka_pid, pg_pid, pg_children)


def test_refuses_port_already_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        kafka = EmbeddedKafka(tmp_path, port=port)
        with pytest.raises(RuntimeError, match="already in use"):
            kafka.start()
        assert kafka.pid is None


async def test_topics_get_the_partitions_asked_for_or_the_catalogues(tmp_path: Path) -> None:
    """`ensure_topics(partitions=1)` (the embedded stack of one instance per service) makes
    every catalogue topic with one partition; without it, the catalogue's own counts."""
    from perlinsos_shared.kafka import ensure_topics
    from perlinsos_shared.settings import Settings
    from perlinsos_shared.topics import CATALOGUE

    counts: list[dict[str, int]] = []
    for partitions in (1, None):
        kafka = EmbeddedKafka(tmp_path / f"state-{partitions}", port=free_port())
        await asyncio.to_thread(kafka.start)
        try:
            settings = Settings(kafka_bootstrap_servers=kafka.bootstrap_servers)
            await ensure_topics(settings, partitions=partitions)
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
            await admin.start()
            try:
                described = await admin.describe_topics([t.name for t in CATALOGUE])
            finally:
                await admin.close()
            counts.append({d["topic"]: len(d["partitions"]) for d in described})
        finally:
            await asyncio.to_thread(kafka.stop)
    one, catalogue = counts
    assert set(one.values()) == {1}
    assert catalogue == {t.name: t.partitions for t in CATALOGUE}
    assert max(catalogue.values()) > 1


def test_shared_buffers_are_a_quarter_of_memory_within_bounds() -> None:
    from perlinsos_devruntime.embedded import shared_buffers

    gib = 1024**3
    assert shared_buffers(4 * gib) == "1024MB"
    assert shared_buffers(1 * gib) == "256MB"  # never below the old fixed size
    assert shared_buffers(64 * gib) == "2048MB"  # nor above 2 GB
