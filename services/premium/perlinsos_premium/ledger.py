"""The SQL side of covers, ledger, adjustments and running totals (rules stay pure).

Every write is set-based (`perlinsos_shared.sql.insert_rows`: one statement per table per
batch); the month roll bills every running cover for a month in one INSERT ... SELECT.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import asyncpg

from perlinsos_premium.billing import first_day, next_period
from perlinsos_premium.covers import Cover, Covers
from perlinsos_premium.rates import Rate, RateTable
from perlinsos_premium.reconcile import Amount, Changes, Key
from perlinsos_shared.sql import insert_rows

CLOSE_LOCK = 0x5052454D  # advisory lock: batches share it, a month close takes it alone

Totals = dict[tuple[str, str], list[int]]  # (line, period) -> [participants, jkk, jkm, adj]

COVER_COLUMNS = (
    ("participant_id", "text"),
    ("funding_line", "text"),
    ("cover_start", "date"),
    ("cover_end", "date"),
)
LEDGER_COLUMNS = (
    ("participant_id", "text"),
    ("period", "text"),
    ("funding_line", "text"),
    ("jkk_idr", "bigint"),
    ("jkm_idr", "bigint"),
)
ADJUSTMENT_COLUMNS = (
    ("participant_id", "text"),
    ("for_period", "text"),
    ("funding_line", "text"),
    ("booked_period", "text"),
    ("jkk_idr", "bigint"),
    ("jkm_idr", "bigint"),
    ("reason", "text"),
)
TOTAL_COLUMNS = (
    ("funding_line", "text"),
    ("period", "text"),
    ("participants", "int"),
    ("jkk_idr", "bigint"),
    ("jkm_idr", "bigint"),
    ("adjustments_idr", "bigint"),
    ("changed", "bool"),
    ("trace_headers", "jsonb"),
)
PEOPLE_COLUMNS = (("participant_id", "text"), ("nik", "text"), ("full_name", "text"))


async def load_rates(conn: asyncpg.Connection | asyncpg.Pool) -> RateTable:
    """The rate table; `RateTableError` when rows of one line and component overlap."""
    rows = await conn.fetch(
        "SELECT funding_line, component, amount_idr, valid_from, valid_to FROM rates"
    )
    return RateTable(tuple(Rate(**dict(r)) for r in rows))


async def check_rates(pool: asyncpg.Pool) -> None:
    """At start-up: refuse to run on a rate table with overlapping rows."""
    await load_rates(pool)


async def load_covers(conn: asyncpg.Connection, ids: list[str]) -> dict[str, Covers]:
    rows = await conn.fetch(
        "SELECT participant_id, funding_line, cover_start, cover_end FROM covers"
        " WHERE participant_id = ANY($1::text[]) ORDER BY participant_id, cover_start",
        ids,
    )
    out: dict[str, list[Cover]] = defaultdict(list)
    for r in rows:
        out[r["participant_id"]].append(Cover(r["funding_line"], r["cover_start"], r["cover_end"]))
    return {k: tuple(v) for k, v in out.items()}


async def save_covers(conn: asyncpg.Connection, covers: Mapping[str, Covers]) -> None:
    if not covers:
        return
    await conn.execute("DELETE FROM covers WHERE participant_id = ANY($1::text[])", list(covers))
    await insert_rows(
        conn,
        "covers",
        COVER_COLUMNS,
        [
            (pid, c.funding_line, c.cover_start, c.cover_end)
            for pid, cs in covers.items()
            for c in cs
        ],
    )


async def load_billed(
    conn: asyncpg.Connection, ids: list[str]
) -> tuple[dict[str, dict[Key, Amount]], dict[str, dict[Key, Amount]]]:
    """Ledger rows and adjustments carried, per participant, keyed (period, line)."""
    ledger: dict[str, dict[Key, Amount]] = defaultdict(dict)
    for r in await conn.fetch(
        "SELECT participant_id, period, funding_line, jkk_idr, jkm_idr FROM ledger"
        " WHERE participant_id = ANY($1::text[])",
        ids,
    ):
        ledger[r["participant_id"]][(r["period"], r["funding_line"])] = (
            int(r["jkk_idr"]),
            int(r["jkm_idr"]),
        )
    adjusted: dict[str, dict[Key, Amount]] = defaultdict(dict)
    for r in await conn.fetch(
        "SELECT participant_id, for_period, funding_line, sum(jkk_idr) AS jkk, sum(jkm_idr) AS jkm"
        " FROM adjustments WHERE participant_id = ANY($1::text[])"
        " GROUP BY participant_id, for_period, funding_line",
        ids,
    ):
        adjusted[r["participant_id"]][(r["for_period"], r["funding_line"])] = (
            int(r["jkk"]),
            int(r["jkm"]),
        )
    return ledger, adjusted


async def closed_months(conn: asyncpg.Connection | asyncpg.Pool) -> set[Key]:
    rows = await conn.fetch("SELECT period, funding_line FROM summaries WHERE status = 'closed'")
    return {(r["period"], r["funding_line"]) for r in rows}


def totals_of(changes: Changes) -> Totals:
    totals: Totals = defaultdict(lambda: [0, 0, 0, 0])
    for row in changes.add:
        t = totals[(row.funding_line, row.period)]
        t[0] += 1
        t[1] += row.jkk_idr
        t[2] += row.jkm_idr
    for row in changes.remove:
        t = totals[(row.funding_line, row.period)]
        t[0] -= 1
        t[1] -= row.jkk_idr
        t[2] -= row.jkm_idr
    for a in changes.adjust:
        totals[(a.funding_line, a.booked_period)][3] += a.amount_idr
    return totals


async def apply_changes(
    conn: asyncpg.Connection, changes: Changes, trace_headers: Mapping[str, str] | None
) -> None:
    if changes.remove:
        await conn.execute(
            "DELETE FROM ledger l USING unnest($1::text[], $2::text[], $3::text[]) AS d(p, m, f)"
            " WHERE l.participant_id = d.p AND l.period = d.m AND l.funding_line = d.f",
            [r.participant_id for r in changes.remove],
            [r.period for r in changes.remove],
            [r.funding_line for r in changes.remove],
        )
    await insert_rows(
        conn,
        "ledger",
        LEDGER_COLUMNS,
        [(r.participant_id, r.period, r.funding_line, r.jkk_idr, r.jkm_idr) for r in changes.add],
    )
    await insert_rows(
        conn,
        "adjustments",
        ADJUSTMENT_COLUMNS,
        [
            (a.participant_id, a.for_period, a.funding_line, a.booked_period, a.jkk_idr,
             a.jkm_idr, a.reason)
            for a in changes.adjust
        ],
    )  # fmt: skip
    await add_to_totals(conn, totals_of(changes), trace_headers)


async def add_to_totals(
    conn: asyncpg.Connection, totals: Totals, trace_headers: Mapping[str, str] | None = None
) -> None:
    """Add deltas to the running totals of provisional line-months and mark them changed."""
    items = [(k, v) for k, v in sorted(totals.items()) if any(v)]
    if not items:
        return
    headers = dict(trace_headers or {})
    updated = await insert_rows(
        conn,
        "summaries AS s",
        TOTAL_COLUMNS,
        [
            (line, period, n, jkk, jkm, adj, True, headers)
            for (line, period), (n, jkk, jkm, adj) in items
        ],
        then="ON CONFLICT (funding_line, period) DO UPDATE SET"
        " participants = s.participants + excluded.participants,"
        " jkk_idr = s.jkk_idr + excluded.jkk_idr, jkm_idr = s.jkm_idr + excluded.jkm_idr,"
        " adjustments_idr = s.adjustments_idr + excluded.adjustments_idr,"
        " changed = true, trace_headers = excluded.trace_headers"
        " WHERE s.status = 'provisional' RETURNING 1",
    )
    if len(updated) != len(items):
        raise RuntimeError("a closed month was about to change; the batch is retried")


async def roll_period(conn: asyncpg.Connection, period: str) -> int:
    """Bill every running cover for `period` in one statement (the billing rule in SQL).

    A cover bills the month when it starts on or before the month's last day and has not
    ended before its first day (an end before the start bills nothing); where covers
    overlap the latest start's line bills, once. Rows already there stay as they are.

    Each line's rates are paired first (`rate`, a few rows), then joined to the covers:
    joined to the covers one rate row at a time, the planner (which has no statistics of
    the small rates table) read and sorted every cover once per line, three times.
    """
    start = first_day(period)
    end = first_day(next_period(period))
    status = await conn.fetchval(
        """
        WITH rate AS MATERIALIZED (
            SELECT k.funding_line, k.amount_idr AS jkk, m.amount_idr AS jkm
            FROM rates k
            JOIN rates m ON m.funding_line = k.funding_line AND m.component = 'JKM'
             AND m.valid_from <= $2 AND (m.valid_to IS NULL OR m.valid_to >= $2)
            WHERE k.component = 'JKK'
              AND k.valid_from <= $2 AND (k.valid_to IS NULL OR k.valid_to >= $2)
        ), active AS (
            SELECT DISTINCT ON (c.participant_id) c.participant_id, c.funding_line
            FROM covers c
            WHERE c.cover_start < $3
              AND (c.cover_end IS NULL OR (c.cover_end >= $2 AND c.cover_end >= c.cover_start))
            ORDER BY c.participant_id, c.cover_start DESC
        ), priced AS (
            SELECT a.participant_id, a.funding_line, r.jkk, r.jkm
            FROM active a JOIN rate r ON r.funding_line = a.funding_line
        ), ins AS (
            INSERT INTO ledger (participant_id, period, funding_line, jkk_idr, jkm_idr)
            SELECT participant_id, $1, funding_line, jkk, jkm FROM priced
            ON CONFLICT DO NOTHING
            RETURNING funding_line, jkk_idr, jkm_idr
        ), agg AS (
            SELECT funding_line, count(*)::int AS n, sum(jkk_idr)::bigint AS jkk,
                   sum(jkm_idr)::bigint AS jkm
            FROM ins GROUP BY funding_line
        ), up AS (
            INSERT INTO summaries AS s (funding_line, period, participants, jkk_idr, jkm_idr,
                                        changed)
            SELECT funding_line, $1, n, jkk, jkm, true FROM agg
            ON CONFLICT (funding_line, period) DO UPDATE SET
                participants = s.participants + excluded.participants,
                jkk_idr = s.jkk_idr + excluded.jkk_idr, jkm_idr = s.jkm_idr + excluded.jkm_idr,
                changed = true
            WHERE s.status = 'provisional'
            RETURNING 1
        )
        SELECT coalesce((SELECT sum(n) FROM agg), 0)
        """,
        period,
        start,
        end,
    )
    await conn.execute(
        "INSERT INTO rolled_periods (period) VALUES ($1) ON CONFLICT DO NOTHING", period
    )
    return int(status)


async def upsert_people(conn: asyncpg.Connection, people: Iterable[tuple[str, str, str]]) -> None:
    rows = list(people)
    if not rows:
        return
    latest = {pid: (pid, nik, name) for pid, nik, name in rows}  # the last one of each counts
    await insert_rows(
        conn,
        "people",
        PEOPLE_COLUMNS,
        list(latest.values()),
        then="ON CONFLICT (participant_id) DO UPDATE SET nik = excluded.nik,"
        " full_name = excluded.full_name",
    )
