"""Read side for operators, finance and the cohort run: what premium's tables hold."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from perlinsos_premium.reconcile import Adjustment


async def liability_by_line(pool: asyncpg.Pool, period: str) -> dict[str, dict[str, int]]:
    """Per funding line for a period: participants and rupiah, summed from the ledger
    and the adjustments booked in the period (so it traces to people)."""
    rows = await pool.fetch(
        "WITH l AS (SELECT funding_line, count(*) AS participants, sum(jkk_idr) AS jkk,"
        " sum(jkm_idr) AS jkm FROM ledger WHERE period = $1 GROUP BY funding_line),"
        " a AS (SELECT funding_line, sum(jkk_idr + jkm_idr) AS adj FROM adjustments"
        " WHERE booked_period = $1 GROUP BY funding_line)"
        " SELECT funding_line, coalesce(l.participants, 0) AS participants,"
        " coalesce(l.jkk, 0) AS jkk, coalesce(l.jkm, 0) AS jkm, coalesce(a.adj, 0) AS adj"
        " FROM l FULL JOIN a USING (funding_line)",
        period,
    )
    return {
        r["funding_line"]: {
            "participants": int(r["participants"]),
            "jkk_idr": int(r["jkk"]),
            "jkm_idr": int(r["jkm"]),
            "adjustments_idr": int(r["adj"]),
            "amount_idr": int(r["jkk"]) + int(r["jkm"]) + int(r["adj"]),
        }
        for r in rows
    }


@dataclass(frozen=True)
class AdjustmentLine(Adjustment):
    """A booked correction with the person it concerns, for operators and finance."""

    nik: str | None = None
    full_name: str | None = None


async def adjustments_booked(pool: asyncpg.Pool, period: str) -> list[AdjustmentLine]:
    """Every correction booked in `period`, per participant (nets out repeated ones)."""
    rows = await pool.fetch(
        "SELECT a.participant_id, p.nik, p.full_name, a.funding_line, a.for_period,"
        " a.booked_period, sum(a.jkk_idr) AS jkk, sum(a.jkm_idr) AS jkm,"
        " string_agg(DISTINCT a.reason, ',') AS reason FROM adjustments a"
        " LEFT JOIN people p USING (participant_id) WHERE a.booked_period = $1"
        " GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(a.jkk_idr + a.jkm_idr) <> 0"
        " ORDER BY a.funding_line, p.nik NULLS LAST, a.participant_id, a.for_period",
        period,
    )
    return [
        AdjustmentLine(
            participant_id=r["participant_id"],
            for_period=r["for_period"],
            funding_line=r["funding_line"],
            booked_period=r["booked_period"],
            jkk_idr=int(r["jkk"]),
            jkm_idr=int(r["jkm"]),
            reason=r["reason"],
            nik=r["nik"],
            full_name=r["full_name"],
        )
        for r in rows
    ]


async def billed_by_nik(pool: asyncpg.Pool, line: str, period: str) -> dict[str, tuple[str, int]]:
    """NIK -> (full name, rupiah) the ledger bills for `line` in `period` (JKK + JKM)."""
    rows = await pool.fetch(
        "SELECT p.nik, p.full_name, l.jkk_idr + l.jkm_idr AS amount"
        " FROM ledger l JOIN people p USING (participant_id)"
        " WHERE l.funding_line = $1 AND l.period = $2",
        line,
        period,
    )
    return {r["nik"]: (r["full_name"], int(r["amount"])) for r in rows}
