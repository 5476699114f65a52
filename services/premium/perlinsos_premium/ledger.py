"""Ledger and summary writes: the SQL side of premium (the rule stays in billing.py)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import asyncpg

from perlinsos_premium.rates import Rate, RateTable
from perlinsos_shared.clock import now_local
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import FundingLine, PremiumSummary
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import SUMMARIES

SOURCE = "perlinsos/premium"

Delta = dict[tuple[str, str], list[int]]  # (line, period) -> [participants, jkk, jkm]


async def load_rates(conn: asyncpg.Connection | asyncpg.Pool) -> RateTable:
    rows = await conn.fetch(
        "SELECT funding_line, component, amount_idr, valid_from, valid_to FROM rates"
    )
    return RateTable(tuple(Rate(**dict(r)) for r in rows))


def new_delta() -> Delta:
    return defaultdict(lambda: [0, 0, 0])


async def insert_ledger(
    conn: asyncpg.Connection, rows: list[tuple[str, str, str, int, int]], delta: Delta
) -> None:
    if not rows:
        return
    inserted = await conn.fetch(
        "INSERT INTO ledger (participant_id, period, funding_line, jkk_idr, jkm_idr) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) "
        "ON CONFLICT DO NOTHING RETURNING funding_line, period, jkk_idr, jkm_idr",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
    )
    for r in inserted:
        d = delta[(r["funding_line"], r["period"])]
        d[0] += 1
        d[1] += r["jkk_idr"]
        d[2] += r["jkm_idr"]


async def delete_ledger_after(
    conn: asyncpg.Connection, participant_id: str, last_period: str, delta: Delta
) -> None:
    removed = await conn.fetch(
        "DELETE FROM ledger l USING summaries s WHERE l.participant_id = $1 AND l.period > $2"
        " AND s.funding_line = l.funding_line AND s.period = l.period"
        " AND s.status = 'provisional' RETURNING l.funding_line, l.period, l.jkk_idr, l.jkm_idr",
        participant_id,
        last_period,
    )
    for r in removed:
        d = delta[(r["funding_line"], r["period"])]
        d[0] -= 1
        d[1] -= r["jkk_idr"]
        d[2] -= r["jkm_idr"]


async def publish_summaries(
    conn: asyncpg.Connection,
    delta: Delta,
    outbox: Outbox,
    trace_headers: dict[str, str] | None = None,
) -> list[PremiumSummary]:
    """Apply the batch's totals and publish one new revision per line-month it touched."""
    out: list[PremiumSummary] = []
    for (line, period), (n, jkk, jkm) in sorted(delta.items()):
        row = await conn.fetchrow(
            "INSERT INTO summaries AS s (funding_line, period, revision, participants, jkk_idr,"
            " jkm_idr) VALUES ($1, $2, 1, $3, $4, $5) ON CONFLICT (funding_line, period) DO UPDATE"
            " SET revision = s.revision + 1, participants = s.participants + excluded.participants,"
            " jkk_idr = s.jkk_idr + excluded.jkk_idr, jkm_idr = s.jkm_idr + excluded.jkm_idr"
            " RETURNING *",
            line,
            period,
            n,
            jkk,
            jkm,
        )
        out.append(await summary_event(conn, row))
    for s in out:
        outbox.add(
            SUMMARIES.name,
            f"{s.funding_line}:{s.period}",
            make_event(SOURCE, s, subject=f"{s.funding_line}:{s.period}"),
            trace_headers,
        )
    return out


async def summary_event(conn: asyncpg.Connection, row: Any) -> PremiumSummary:
    year = int(row["period"][:4])
    budget = await conn.fetchval(
        "SELECT amount_idr FROM budgets WHERE funding_line = $1 AND fiscal_year = $2",
        row["funding_line"],
        year,
    )
    used = await conn.fetchval(
        "SELECT coalesce(sum(jkk_idr + jkm_idr + adjustments_idr), 0) FROM summaries"
        " WHERE funding_line = $1 AND period LIKE $2",
        row["funding_line"],
        f"{year:04d}-%",
    )
    return PremiumSummary(
        funding_line=FundingLine(row["funding_line"]),
        period=row["period"],
        status=row["status"],
        revision=row["revision"],
        participants=row["participants"],
        jkk_idr=row["jkk_idr"],
        jkm_idr=row["jkm_idr"],
        adjustments_idr=row["adjustments_idr"],
        amount_idr=row["jkk_idr"] + row["jkm_idr"] + row["adjustments_idr"],
        budget_idr=int(budget or 0),
        budget_used_idr=int(used),
    )


def today() -> date:
    return now_local().date()
