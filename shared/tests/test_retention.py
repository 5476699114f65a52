"""Retention on a real PostgreSQL: published outbox rows and inbox ids older than the
window go, in batches; unpublished rows and anything younger stay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from perlinsos_shared import retention
from perlinsos_shared.db import SHARED_MIGRATIONS, create_pool, migrate
from perlinsos_shared.outbox import replay

pytestmark = pytest.mark.flow

SERVICE = "retentiontest"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, SERVICE, max_size=2)
    await migrate(p, SERVICE, [SHARED_MIGRATIONS])
    yield p
    await p.close()


async def test_old_published_rows_and_inbox_ids_go_the_rest_stays(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH", 7)  # several batches
    # outbox: 20 written 31 days ago and published (with personal data), 5 written 29
    # days ago and published, 3 written 40 days ago and never published (still pending)
    await pool.execute(
        "INSERT INTO outbox (topic, key, value, created_at)"
        " SELECT 't', 'k', '{\"nik\": \"2171015509900001\"}'::bytea, now() - d"
        " FROM unnest(array_fill(interval '31 days', ARRAY[20])"
        " || array_fill(interval '29 days', ARRAY[5])) AS d"
    )
    await pool.execute(
        "WITH o AS (INSERT INTO outbox (topic, key, value, created_at) SELECT 't', 'k',"
        " 'x'::bytea, now() - interval '40 days' FROM generate_series(1, 3) RETURNING id)"
        " INSERT INTO outbox_pending (id) SELECT id FROM o"
    )
    await pool.execute(
        "INSERT INTO inbox (source, event_id, received_at) SELECT 's', 'old-' || i,"
        " now() - interval '30 days 1 hour' FROM generate_series(1, 15) i"
    )
    await pool.execute(
        "INSERT INTO inbox (source, event_id, received_at) SELECT 's', 'new-' || i,"
        " now() - interval '2 days' FROM generate_series(1, 4) i"
    )

    pruned = await retention.prune(pool, 30)

    assert pruned == retention.Pruned(outbox=20, inbox=15)
    left = await pool.fetch(
        "SELECT id IN (SELECT id FROM outbox_pending) AS unpublished, count(*) AS n"
        " FROM outbox GROUP BY 1"
    )
    assert {r["unpublished"]: r["n"] for r in left} == {False: 5, True: 3}
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id LIKE 'new-%'") == 4
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 4
    assert await retention.prune(pool, 30) == retention.Pruned(0, 0)
    # replay reaches back as far as the window: the 5 kept published rows
    assert await replay(pool, SERVICE) == 5
