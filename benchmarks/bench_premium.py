"""Month close of 1,000,000 participants on the embedded PostgreSQL (set-based SQL).

A fresh PostgreSQL is started; covers are generated directly with generate_series
(spread over the three funding lines); then:

- `close_unrolled_s`: close a month whose running covers were never billed (the close
  bills every cover, recomputes, freezes and publishes: the worst case);
- `roll_s` then `close_rolled_s`: the usual case, where the month roll billed the covers
  when the month began and the close only recomputes, freezes and publishes.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import date
from pathlib import Path

from perlinsos_devruntime.embedded import EmbeddedPostgres, free_port
from perlinsos_premium.closing import close_month
from perlinsos_premium.ledger import roll_period
from perlinsos_shared.db import open_service_db


async def close_figures(url: str, n: int) -> dict[str, float | int | str]:
    """Generate `n` covers in the (empty) database at `url` and time the closes."""
    pool = await open_service_db(url, "premium", pool_size=2)
    try:
        t0 = time.perf_counter()
        await pool.execute(
            "INSERT INTO covers (participant_id, funding_line, cover_start)"
            " SELECT 'P' || lpad(i::text, 8, '0'),"
            " (ARRAY['PERWAKO-49-2025', 'PERWAKO-30-2025', 'PERWAKO-3-2023'])[1 + i % 3],"
            " DATE '2025-06-01' + (i % 90) FROM generate_series(1, $1) AS i",
            n,
        )
        await pool.execute("ANALYZE covers")
        generate_s = time.perf_counter() - t0
        today = date(2025, 12, 20)
        unrolled = await close_month(pool, "2025-10", today)
        t1 = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            rolled = await roll_period(conn, "2025-11")
        roll_s = time.perf_counter() - t1
        closed = await close_month(pool, "2025-11", today)
        again = time.perf_counter()
        await close_month(pool, "2025-11", today)
        again_s = time.perf_counter() - again
        total = sum(s.participants for s in closed.summaries)
        amount = sum(s.amount_idr for s in closed.summaries)
        assert total == n == rolled, (total, n, rolled)
        assert amount == 16_800 * n
        return {
            "participants": n,
            "generate_covers_s": round(generate_s, 2),
            "close_unrolled_s": round(unrolled.seconds, 2),
            "roll_s": round(roll_s, 2),
            "close_rolled_s": round(closed.seconds, 2),
            "close_again_s": round(again_s, 3),
            "closed_amount_idr": amount,
            "target_s": 10,
        }
    finally:
        await pool.close()


def run(quick: bool) -> dict[str, float | int | str]:
    n = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="bench-premium-") as tmp:
        pg = EmbeddedPostgres(Path(tmp), port=free_port())
        pg.start()
        try:
            return asyncio.run(close_figures(pg.admin_url, n))
        finally:
            pg.stop()
