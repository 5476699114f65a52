"""Read side for operators and the cohort run: liabilities as premium's tables hold them."""

from __future__ import annotations

import asyncpg


async def liability_by_line(pool: asyncpg.Pool, period: str) -> dict[str, dict[str, int]]:
    """Per funding line for a period: participants and rupiah, summed from the ledger."""
    rows = await pool.fetch(
        "SELECT funding_line, count(*) AS participants, sum(jkk_idr) AS jkk, sum(jkm_idr) AS jkm"
        " FROM ledger WHERE period = $1 GROUP BY funding_line",
        period,
    )
    return {
        r["funding_line"]: {
            "participants": int(r["participants"]),
            "jkk_idr": int(r["jkk"]),
            "jkm_idr": int(r["jkm"]),
            "amount_idr": int(r["jkk"]) + int(r["jkm"]),
        }
        for r in rows
    }
