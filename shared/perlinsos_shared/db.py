"""PostgreSQL: one schema and one role per service, forward-only migrations at start.

A running service connects with `DATABASE_URL` logging in as its own role
(`perlinsos_<service>`, made at set-up by `perlinsos_shared.db_roles`): it owns its schema
and can reach nothing else, and it refuses a privileged login (`refuse_privileged_login`).
A privileged URL (tests, set-up) instead makes the service's schema and role and works
as that role, so whatever it creates belongs to the service. Migrations are the `.sql` files of the service's package,
applied in name order, each once, under an advisory lock (several instances may start
together).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from importlib import resources

import asyncpg
import orjson

from perlinsos_shared.db_roles import is_privileged
from perlinsos_shared.sql import json_text

log = logging.getLogger("perlinsos.db")

SHARED_MIGRATIONS = "perlinsos_shared.migrations"


def role_name(service: str) -> str:
    return f"perlinsos_{service}"


async def _bootstrap(url: str, service: str) -> bool:
    """Create the service's role and schema if missing (needs a privileged URL once)."""
    role = role_name(service)
    conn = await asyncpg.connect(url)
    try:
        if not await is_privileged(conn):
            return False  # a service's own login (or the reader): nothing to set up
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('perlinsos-bootstrap'))")
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                try:
                    await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
                except asyncpg.InsufficientPrivilegeError:
                    log.warning("cannot create role %s; using the login role as is", role)
                    return False
            await conn.execute(f'GRANT "{role}" TO CURRENT_USER')
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{service}" AUTHORIZATION "{role}"')
            await conn.execute(f'REVOKE ALL ON SCHEMA public FROM "{role}"')
        return True
    finally:
        await conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name, encoder=json_text, decoder=orjson.loads, schema="pg_catalog"
        )


# Set while a connection is used by `transaction` only: its release skips the reset query.
_TRANSACTION_ONLY: ContextVar[bool] = ContextVar("perlinsos_transaction_only", default=False)


async def _reset(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg has already rolled back a transaction left
    open; the reset query (advisory locks, cursors, LISTEN, session settings) follows
    unless the connection was used by `transaction` alone, which leaves none of those."""
    if _TRANSACTION_ONLY.get():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in a transaction, released without asyncpg's reset query (a
    round trip per batch). Only for work that leaves nothing on the session: no session
    `SET`, advisory locks other than `pg_advisory_xact_*`, `LISTEN`, held cursors or
    temporary tables. What a transaction sets with `SET LOCAL` / `set_config(..., true)`
    ends with it, and one left open is rolled back on release as before."""
    token = _TRANSACTION_ONLY.set(True)
    try:
        async with pool.acquire() as conn, conn.transaction():
            yield conn
    finally:
        _TRANSACTION_ONLY.reset(token)


async def create_pool(
    url: str, service: str, *, min_size: int = 1, max_size: int = 4
) -> asyncpg.Pool:
    """A pool whose every connection works as the service's role, in its schema.

    Role and search path are startup parameters, so the pool's reset on release
    (`RESET ALL`) returns to them rather than to the login role. Connections released
    by `transaction` skip that reset (see `_reset`).
    """
    has_role = await _bootstrap(url, service)
    server_settings = {"search_path": f'"{service}"'}
    if has_role:
        server_settings["role"] = role_name(service)
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings=server_settings,
        command_timeout=60,
        reset=_reset,
    )
    assert pool is not None
    return pool


async def refuse_privileged_login(url: str, service: str) -> None:
    """A running service must not hold a login that reaches beyond its own schema."""
    conn = await asyncpg.connect(url)
    try:
        privileged = await is_privileged(conn)
    finally:
        await conn.close()
    if privileged:
        raise RuntimeError(
            f"DATABASE_URL logs in as a privileged role; {service} must log in as its own"
            f" role {role_name(service)} (made at set-up: see docs/SECURITY.md)"
        )


def _migration_files(package: str) -> list[tuple[str, str]]:
    root = resources.files(package)
    files = sorted((p for p in root.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


async def migrate(pool: asyncpg.Pool, service: str, packages: Sequence[str]) -> list[str]:
    """Apply every migration not yet applied, in order; return the versions applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{service}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for package in packages:
            namespace = package.split(".")[0]
            for name, sql in _migration_files(package):
                version = f"{namespace}/{name}"
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations(version) VALUES ($1)", version)
                applied_now.append(version)
    if applied_now:
        log.info("applied migrations", extra={"versions": applied_now, "service": service})
    return applied_now


async def open_service_db(url: str, service: str, pool_size: int = 8) -> asyncpg.Pool:
    """Pool for a service with the shared tables (outbox, inbox) and its own migrations."""
    pool = await create_pool(url, service, max_size=pool_size)
    await migrate(pool, service, [SHARED_MIGRATIONS, f"perlinsos_{service}.migrations"])
    return pool
