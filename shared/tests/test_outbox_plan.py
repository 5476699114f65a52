"""The relay's batch stays a few index probes whatever the outbox holds.

After a burst the pending ids are deleted faster than autovacuum comes, and the table's
statistics still count them: as a plain join the planner then read the outbox from its
first row up to the first pending id on every round (a merge join), so each round cost in
proportion to everything ever published. The batch reads each pending id's row by primary
key instead; this checks it on a table whose statistics say the opposite of the truth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from perlinsos_shared.db import SHARED_MIGRATIONS, create_pool, migrate
from perlinsos_shared.outbox import _NEXT_BATCH

pytestmark = pytest.mark.flow

SERVICE = "outboxplantest"
PUBLISHED = 30_000
STILL_PENDING = 10


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, SERVICE, max_size=2)
    yield p
    await p.close()


def _rows_read_from(plan: dict[str, Any], relation: str) -> int:
    read = 0
    if plan.get("Relation Name") == relation:
        read += int(plan["Actual Rows"] * plan["Actual Loops"])
    for child in plan.get("Plans", []):
        read += _rows_read_from(child, relation)
    return read


async def test_a_relay_batch_after_a_burst_reads_only_the_pending_rows(
    pool: asyncpg.Pool,
) -> None:
    await migrate(pool, SERVICE, [SHARED_MIGRATIONS])
    async with pool.acquire() as conn:
        # a burst: every row pending, the statistics taken then
        await conn.execute(
            "WITH o AS (INSERT INTO outbox (topic, key, value, headers)"
            " SELECT 't', 'k' || g, '\\x00'::bytea, '{}'::json"
            " FROM generate_series(1, $1) g RETURNING id)"
            " INSERT INTO outbox_pending (id) SELECT id FROM o",
            PUBLISHED + STILL_PENDING,
        )
        await conn.execute("ANALYZE outbox; ANALYZE outbox_pending")
        # then published, all but the last few, with no vacuum or analyze since
        await conn.execute(
            "DELETE FROM outbox_pending WHERE id IN"
            " (SELECT id FROM outbox_pending ORDER BY id LIMIT $1)",
            PUBLISHED,
        )
        expected = [r["id"] for r in await conn.fetch("SELECT id FROM outbox_pending ORDER BY id")]
        async with conn.transaction():
            rows = await conn.fetch(_NEXT_BATCH, 5000)
            plan_text = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + _NEXT_BATCH, 5000)

    assert [r["id"] for r in rows] == expected  # in id order, all of them
    explained = json.loads(plan_text) if isinstance(plan_text, str) else plan_text
    plan = explained[0]["Plan"]
    assert _rows_read_from(plan, "outbox") == STILL_PENDING
