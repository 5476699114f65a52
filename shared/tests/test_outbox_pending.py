"""Migration 0005 on a database written before it: the ids of the rows not yet published
move into `outbox_pending`; published and refused rows stay out of it, and a replay puts
the published ones back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from perlinsos_shared.db import SHARED_MIGRATIONS, _migration_files, create_pool, migrate
from perlinsos_shared.outbox import replay

pytestmark = pytest.mark.flow

SERVICE = "outboxpendingtest"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, SERVICE, max_size=2)
    yield p
    await p.close()


async def test_an_outbox_written_before_the_pending_table(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name, sql in _migration_files(SHARED_MIGRATIONS):
            if name < "0005":
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    f"perlinsos_shared/{name}",
                )
        ids = await conn.fetch(
            "INSERT INTO outbox (topic, key, value, published_at, refused_at, refusal)"
            " VALUES ('t', 'k', 'published'::bytea, now(), NULL, NULL),"
            " ('t', 'k', 'waiting'::bytea, NULL, NULL, NULL),"
            " ('t', 'k', 'refused'::bytea, NULL, now(), 'too large') RETURNING id"
        )
    published, waiting, _refused = (r["id"] for r in ids)

    applied = await migrate(pool, SERVICE, [SHARED_MIGRATIONS])
    assert applied[0] == "perlinsos_shared/0005_outbox_pending.sql"
    assert [r["id"] for r in await pool.fetch("SELECT id FROM outbox_pending")] == [waiting]

    assert await replay(pool, SERVICE) == 1
    pending = await pool.fetch("SELECT id FROM outbox_pending ORDER BY id")
    assert [r["id"] for r in pending] == [published, waiting]
