"""What every operator command does first: reach the database or the broker, or say why not.

Operator commands (`perlinsos <service> ...`, `perlinsos outbox ...`) find PostgreSQL and
Kafka the way the services do: `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`, or the stack
file a running `perlinsos up` leaves. When one cannot be reached, the operator gets one
line on stderr that names what and where, and how to point elsewhere, and exit status 1:
never a traceback. Passwords in URLs are not printed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from perlinsos_shared import outbox
from perlinsos_shared.db import create_pool, open_service_db
from perlinsos_shared.db_roles import SERVICES
from perlinsos_shared.kafka import _admin_security, make_producer, security
from perlinsos_shared.settings import Settings, resolved_settings, writer_settings

T = TypeVar("T")

UNREACHABLE = 1  # exit status: the database or broker could not be reached
CONNECT_TIMEOUT_S = 15.0  # an address that never answers is reported, not waited on

DATABASE_HINT = (
    "set DATABASE_URL (e.g. postgresql://user@host:5432/perlinsos) or start `perlinsos up`"
)
BROKER_HINT = "set KAFKA_BOOTSTRAP_SERVERS (e.g. kafka-1:9092) or start `perlinsos up`"

# What "could not reach" looks like from asyncpg: refused, unresolvable, timed out, the
# server refusing the login or the database (asyncpg.PostgresError covers the last two).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresError,
)
BROKER_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, KafkaError)
# The database or broker gone while a command was using it (a SQL error is not this).
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    KafkaConnectionError,
)


BAD_ARGUMENTS = 2  # exit status of a usage error (Click's), with the accepted values named
PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def fail(message: str, status: int = UNREACHABLE) -> NoReturn:
    """One line on stderr, then exit with `status` (Click and Typer let SystemExit pass)."""
    sys.stderr.write(f"perlinsos: {' '.join(message.split())}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def where(url: str) -> str:
    """host:port/database of a PostgreSQL URL, without user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the configured address"
    return f"{host}{port}{parts.path or ''}"


def reason(exc: BaseException) -> str:
    """A short why, without values (a PostgreSQL DETAIL may quote a row)."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text.removeprefix(f"{name}: ")
    return f"{name}: {text}"[:160].rstrip(": ")


def operator_settings() -> Settings:
    return resolved_settings()


def database_url(settings: Settings | None = None) -> str:
    url = (settings or operator_settings()).database_url
    if not url:
        fail(f"no database to reach: DATABASE_URL is not set and no `perlinsos up` runs; "
             f"{DATABASE_HINT}")  # fmt: skip
    return url


def writer_url(service: str, settings: Settings | None = None) -> str:
    """Where a command that changes `service`'s state logs in: the service's own login from
    a running `perlinsos up` (reads go through the operators' read-only login), or the
    configured `DATABASE_URL`."""
    return database_url(writer_settings(service, settings or operator_settings()))


def bootstrap_servers(settings: Settings | None = None) -> str:
    servers = (settings or operator_settings()).kafka_bootstrap_servers
    if not servers:
        fail(f"no Kafka broker to reach: KAFKA_BOOTSTRAP_SERVERS is not set and no "
             f"`perlinsos up` runs; {BROKER_HINT}")  # fmt: skip
    return servers


async def open_operator_pool(
    service: str,
    url: str | None = None,
    *,
    migrate: bool = False,
    size: int = 2,
    settings: Settings | None = None,
    writes: bool = False,
) -> asyncpg.Pool:
    """A pool on `service`'s schema (its migrations applied first when `migrate`), at
    `url` or the configured database; the caller closes it. Without `writes` it is the
    operators' read-only login when `perlinsos up` runs; with it (or `migrate`, which
    creates tables), the service's own."""
    url = url or (writer_url(service, settings) if writes or migrate else database_url(settings))
    opening: Awaitable[asyncpg.Pool] = (
        open_service_db(url, service, pool_size=size)
        if migrate
        else create_pool(url, service, max_size=size)
    )
    try:
        return await asyncio.wait_for(opening, timeout=CONNECT_TIMEOUT_S)
    except DATABASE_ERRORS as exc:
        fail(f"cannot reach the database at {where(url)} ({reason(exc)}); {DATABASE_HINT}")


@asynccontextmanager
async def operator_pool(
    service: str,
    *,
    migrate: bool = False,
    size: int = 2,
    settings: Settings | None = None,
) -> AsyncIterator[asyncpg.Pool]:
    """`open_operator_pool` for the length of a `with` block."""
    pool = await open_operator_pool(service, migrate=migrate, size=size, settings=settings)
    try:
        yield pool
    finally:
        await pool.close()


def with_pool(
    service: str,
    work: Callable[[asyncpg.Pool], Awaitable[T]],
    *,
    migrate: bool = False,
    size: int = 2,
    settings: Settings | None = None,
) -> T:
    """Run `work(pool)` to completion from a synchronous command."""

    async def run() -> T:
        async with operator_pool(service, migrate=migrate, size=size, settings=settings) as pool:
            return await work(pool)

    return asyncio.run(run())


async def replay_outboxes(
    url: str, services: tuple[str, ...] = SERVICES, urls: dict[str, str] | None = None
) -> dict[str, int]:
    """Mark every published outbox row of these services unpublished again, so each relay
    publishes them anew in order (a broker that lost its topics); returns the rows per
    service. `urls`: each service's own login, when `url` is the operators' read-only one."""
    counts = {}
    for service in services:
        pool = await open_operator_pool(service, (urls or {}).get(service, url), size=1)
        try:
            counts[service] = await outbox.replay(pool, service)
        finally:
            await pool.close()
    return counts


async def hold_outboxes(
    url: str, services: tuple[str, ...] = SERVICES, urls: dict[str, str] | None = None
) -> None:
    """Stop these services' relays publishing (until `replay_outboxes`); returns once no
    relay batch is in flight."""
    for service in services:
        pool = await open_operator_pool(service, (urls or {}).get(service, url), size=1)
        try:
            await outbox.hold(pool, service)
        finally:
            await pool.close()


async def _start_or_fail(client: AIOKafkaProducer | AIOKafkaConsumer, servers: str) -> None:
    # aiokafka logs each failed connection attempt; the one line below says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(client.start(), timeout=CONNECT_TIMEOUT_S)
    except BROKER_ERRORS as exc:
        await client.stop()
        fail(f"cannot reach the Kafka broker at {servers} ({reason(exc)}); {BROKER_HINT}")


@asynccontextmanager
async def operator_consumer(settings: Settings | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    """A started Kafka consumer in no group (reading changes nothing), or one line saying
    which broker did not answer."""
    settings = settings or operator_settings()
    servers = bootstrap_servers(settings)
    kwargs = _admin_security(settings) if security(settings) is not None else {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, group_id=None, enable_auto_commit=False, **kwargs
    )
    await _start_or_fail(consumer, servers)
    try:
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def operator_producer(
    client_id: str, settings: Settings | None = None
) -> AsyncIterator[AIOKafkaProducer]:
    """A started Kafka producer, or one line saying which broker did not answer."""
    settings = settings or operator_settings()
    servers = bootstrap_servers(settings)
    producer = make_producer(settings, client_id)
    await _start_or_fail(producer, servers)
    try:
        yield producer
    finally:
        await producer.stop()


# --- arguments: a bad one exits 2 and says what is accepted ------------------------------


def period(value: str | None) -> str | None:
    """Typer callback for a contribution month."""
    if value is None:
        return None
    if not PERIOD.match(value.strip()):
        raise typer.BadParameter(f"{value!r} is not a month: write YYYY-MM, e.g. 2026-01.")
    return value.strip()


def day(value: str | None) -> str | None:
    """Typer callback for a calendar date (Asia/Jakarta): YYYY-MM-DD, checked."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date: write YYYY-MM-DD, e.g. 2026-01-31."
        ) from None


def nik(value: str) -> str:
    """Typer callback for a NIK: 16 digits (spaces and dots as written on a KTP are dropped)."""
    digits = re.sub(r"[\s.\-]", "", value)
    if not (len(digits) == 16 and digits.isdigit()):
        raise typer.BadParameter("a NIK is 16 digits, e.g. 2171011708900001.")
    return digits
