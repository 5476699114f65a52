"""Premium's SQL against a real PostgreSQL (no broker): handlers, roll, close, export."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from openpyxl import load_workbook

from perlinsos_premium.billing import billed_periods, first_day, next_period
from perlinsos_premium.closing import close_month
from perlinsos_premium.export import HEADER_ROW, gather, write_csv, write_xlsx
from perlinsos_premium.handlers import handle_decisions, handle_participants
from perlinsos_premium.ledger import check_rates, roll_period
from perlinsos_premium.queries import adjustments_booked, liability_by_line
from perlinsos_premium.rates import RateTableError
from perlinsos_premium.rolling import months_to_roll, roll_due_months
from perlinsos_premium.summaries import arrears_now, publish_changed, warn_missed_due_dates
from perlinsos_shared.clock import BATAM_TZ, today_local
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.db import open_service_db
from perlinsos_shared.envelope import RawEnvelope
from perlinsos_shared.outbox import Outbox

pytestmark = pytest.mark.db  # PostgreSQL only: no broker, no service process

L30 = "PERWAKO-30-2025"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_service_db(database_url, "premium", pool_size=2)
    yield p
    await p.close()


def incoming(event_type: str, data: dict[str, Any]) -> Incoming:
    env = RawEnvelope(
        specversion="1.0", id=str(uuid.uuid4()), source="t", type=event_type, data=data
    )
    return Incoming(envelope=env, key=None, headers={}, record=None)  # type: ignore[arg-type]


def decision(
    pid: str, outcome: str, start: date | None = None, end: date | None = None
) -> Incoming:
    return incoming(
        "perlinsos.eligibility.decided.v1",
        {
            "decision_id": str(uuid.uuid4()),
            "participant_id": pid,
            "outcome": outcome,
            "funding_line": L30,
            "cover_start": start.isoformat() if start else None,
            "cover_end": end.isoformat() if end else None,
            "rule_version": "t",
            "occupation": "OJEK_DARING",
            "agency": "DISHUB",
            "request_id": pid,
            "first_name": "Budi",
            "phone_e164": "+6281234567890",
            "decided_at": datetime.now(BATAM_TZ).isoformat(),
        },
    )


async def apply(pool: asyncpg.Pool, handler: Any, messages: list[Incoming]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await handler(conn, messages, Outbox())


async def test_month_roll_sql_agrees_with_the_pure_billing_rule(pool: asyncpg.Pool) -> None:
    starts = [date(2025, 9, 30), date(2025, 10, 1), date(2025, 10, 31), date(2025, 11, 1)]
    ends: list[date | None] = [None, date(2025, 9, 29), date(2025, 10, 1), date(2025, 10, 31)]
    ends += [date(2025, 11, 1), date(2025, 9, 30)]
    covers = [(f"p{i}-{j}", s, e) for i, s in enumerate(starts) for j, e in enumerate(ends)]
    await pool.execute(
        "INSERT INTO covers SELECT p, $4, s, e FROM unnest($1::text[], $2::date[], $3::date[])"
        " AS d(p, s, e)",
        [c[0] for c in covers],
        [c[1] for c in covers],
        [c[2] for c in covers],
        L30,
    )
    async with pool.acquire() as conn, conn.transaction():
        billed = await roll_period(conn, "2025-10")
    rows = {r["participant_id"] for r in await pool.fetch("SELECT participant_id FROM ledger")}
    expected = {p for p, s, e in covers if "2025-10" in billed_periods(s, e, date(2030, 1, 1))}
    assert rows == expected and billed == len(expected) > 0


async def test_start_up_refuses_overlapping_rate_rows(pool: asyncpg.Pool) -> None:
    await check_rates(pool)  # the shipped table is fine
    # a PP 50/2025-style halving entered without closing the open-ended row first
    await pool.execute(
        "INSERT INTO rates (funding_line, component, amount_idr, valid_from, valid_to, note)"
        " VALUES ($1, 'JKM', 3400, DATE '2026-02-01', DATE '2026-07-31', 'overlap')",
        L30,
    )
    with pytest.raises(RateTableError, match=f"{L30} JKM.*overlaps"):
        await check_rates(pool)


async def test_decisions_close_back_dated_exit_and_export(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    today = today_local()
    period = f"{today:%Y-%m}"
    start = today.replace(day=1)
    await apply(
        pool,
        handle_participants,
        [
            incoming(
                "perlinsos.participant.enrolled.v1",
                {
                    "participant_id": f"p{i}",
                    "nik": f"21710{i:011d}",
                    "full_name": f"Nama {i}",
                    "birth_date": "1990-01-01",
                    "sex": "L",
                    "phone_e164": "+6281234567890",
                    "address": {},
                    "occupation": "OJEK_DARING",
                    "existing_bpjs_tk": False,
                    "agency": "DISHUB",
                    "request_id": f"r{i}",
                    "enrolled_at": "2025-10-01T00:00:00+07:00",
                },
            )
            for i in range(3)
        ],
    )
    batch = [decision(f"p{i}", "eligible", start) for i in range(3)]
    batch.append(decision("p9", "waitlisted"))
    await apply(pool, handle_decisions, batch)
    await apply(pool, handle_decisions, batch[:2])  # same decisions, other ids: no change
    published = await publish_changed(pool, today)
    assert [(s.period, s.participants, s.amount_idr, s.revision) for s in published] == [
        (period, 3, 3 * 16_800, 1)
    ]
    assert await publish_changed(pool, today) == []  # nothing changed, nothing published

    first = await close_month(pool, period, today)
    assert not first.already_closed and len(first.summaries) == 3
    closed = {s.funding_line.value: s for s in first.summaries}
    assert closed[L30].status == "closed" and closed[L30].amount_idr == 3 * 16_800
    assert (await close_month(pool, period, today)).already_closed

    # a back-dated exit: p1 left before cover started
    await apply(pool, handle_decisions, [decision("p1", "exited", end=start - timedelta(days=1))])
    after = await liability_by_line(pool, period)
    assert after[L30]["amount_idr"] == 3 * 16_800  # the closed month is untouched
    nxt = (start + timedelta(days=32)).strftime("%Y-%m")
    adj = await adjustments_booked(pool, nxt)
    assert [(a.nik, a.for_period, a.amount_idr) for a in adj] == [
        ("2171000000000001", period, -16_800)
    ]
    [summary] = await publish_changed(pool, today)
    assert (summary.period, summary.adjustments_idr, summary.status) == (
        nxt,
        -16_800,
        "provisional",
    )

    export = await gather(pool, period, today)
    path = write_xlsx(export, tmp_path / "x.xlsx")
    wb = load_workbook(path)
    sheet = wb["Ringkasan"]
    total_row = HEADER_ROW + 1 + 3
    assert sheet.cell(total_row, 1).value == "TOTAL"
    assert sheet.cell(total_row, 8).value == closed[L30].amount_idr
    line_sheet = wb[L30]
    assert line_sheet.cell(HEADER_ROW + 4, 8).value == closed[L30].amount_idr
    assert "RAHASIA" in str(sheet.cell(1, 1).value) and "RAHASIA" in wb.properties.keywords
    assert path.stat().st_mode & 0o077 == 0
    files = write_csv(await gather(pool, nxt, today), tmp_path / "csv")
    assert any(
        f.name.endswith(f"{L30}.csv") and "-16800" in f.read_text("utf-8-sig") for f in files
    )


async def test_the_roll_catches_up_two_missed_months_once(pool: asyncpg.Pool) -> None:
    """Premium was down for two month starts: the next roll bills both and this month."""
    today = today_local()
    current = f"{today:%Y-%m}"
    missed = [next_period(current, -2), next_period(current, -1)]
    last_rolled = next_period(current, -3)
    people = [f"catch-{i}" for i in range(5)]
    await pool.execute(
        "INSERT INTO covers SELECT p, $2, $3, NULL FROM unnest($1::text[]) AS d(p)",
        people,
        L30,
        first_day(next_period(current, -4)),
    )
    # the covers' months up to the last roll were billed before the downtime
    await pool.execute("INSERT INTO rolled_periods (period) VALUES ($1)", last_rolled)

    rolled = await roll_due_months(pool, today)

    assert [r.period for r in rolled] == [*missed, current]
    assert [r.billed for r in rolled] == [5, 5, 5]
    billed = await pool.fetch(
        "SELECT period, count(*) AS n FROM ledger GROUP BY period ORDER BY period"
    )
    assert {r["period"]: r["n"] for r in billed} == {p: 5 for p in [*missed, current]}
    summaries = await pool.fetch(
        "SELECT period, participants FROM summaries WHERE funding_line = $1", L30
    )
    assert {r["period"]: r["participants"] for r in summaries} == {p: 5 for p in [*missed, current]}
    # a second roll (another instance, or the next tick) bills nothing
    assert await roll_due_months(pool, today) == []
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 15


def test_months_to_roll() -> None:
    assert months_to_roll(None, "2026-11") == ["2026-11"]
    assert months_to_roll("2026-11", "2026-11") == []
    assert months_to_roll("2026-08", "2026-11") == ["2026-09", "2026-10", "2026-11"]
    assert months_to_roll("2025-12", "2026-01") == ["2026-01"]


async def test_a_roll_racing_exits_bills_no_month_after_an_exit(pool: asyncpg.Pool) -> None:
    """Exits (cover ended last month) decided while this month is rolled: whichever runs
    first, nobody who left is billed this month and everyone who stays is, once."""
    today = today_local()
    current = f"{today:%Y-%m}"
    previous = next_period(current, -1)
    for round_ in range(4):
        await pool.execute("TRUNCATE covers, ledger, summaries, rolled_periods, adjustments")
        people = [f"race-{round_}-{i}" for i in range(40)]
        start = first_day(previous)
        await pool.execute(
            "INSERT INTO covers SELECT p, $2, $3, NULL FROM unnest($1::text[]) AS d(p)",
            people,
            L30,
            start,
        )
        async with pool.acquire() as conn, conn.transaction():
            await roll_period(conn, previous)
        leaving = people[::2]
        exits = [
            decision(p, "exited", start, first_day(current) - timedelta(days=1)) for p in leaving
        ]
        await asyncio.gather(
            roll_due_months(pool, today),
            *(apply(pool, handle_decisions, exits[i : i + 5]) for i in range(0, len(exits), 5)),
        )
        billed_now = {
            r["participant_id"]
            for r in await pool.fetch(
                "SELECT participant_id FROM ledger WHERE period = $1", current
            )
        }
        assert billed_now == set(people) - set(leaving)
        assert await pool.fetchval(
            "SELECT participants FROM summaries WHERE period = $1 AND funding_line = $2",
            current,
            L30,
        ) == len(people) - len(leaving)


async def test_a_missed_due_date_is_announced_once_with_people_at_risk(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Two unpaid months of a line, billed to three people: finance is warned once per
    missed due date, the summary carries the months, the people and the lapse date."""
    people = ["risk-1", "risk-2", "risk-3"]
    await pool.execute(
        "INSERT INTO covers SELECT p, $2, DATE '2025-10-01', NULL FROM unnest($1::text[]) p",
        people,
        L30,
    )
    for period in ("2025-10", "2025-11"):
        async with pool.acquire() as conn, conn.transaction():
            await roll_period(conn, period)
    before_due = date(2025, 10, 15)
    assert await warn_missed_due_dates(pool, before_due) == 0
    caplog.set_level("WARNING", logger="perlinsos.premium")
    assert await warn_missed_due_dates(pool, date(2025, 10, 16)) == 1  # October missed
    assert await warn_missed_due_dates(pool, date(2025, 10, 20)) == 0  # said once
    assert await warn_missed_due_dates(pool, date(2025, 11, 18)) == 1  # November (Mon 17)
    warned = [r for r in caplog.records if "due date missed" in r.getMessage()]
    assert [(r.__dict__["period"], r.__dict__["people_at_risk"]) for r in warned] == [
        ("2025-10", 3),
        ("2025-11", 3),
    ]
    assert all("risk-" not in str(r.__dict__) for r in warned)  # no participant ids
    _, arrears = await arrears_now(pool, date(2025, 11, 18))
    state = arrears[L30]
    assert (state.months_unpaid, state.people_at_risk) == (2, 3)
    assert state.lapses_on == date(2025, 12, 16)
    published = await publish_changed(pool, date(2025, 11, 18))  # republished for finance
    [summary] = [s for s in published if s.period == "2025-11"]
    assert (summary.period, summary.lapse_risk, summary.months_unpaid) == ("2025-11", True, 2)
    assert (summary.people_at_risk, summary.lapses_on) == (3, date(2025, 12, 16))


async def test_people_at_risk_are_each_counted_once_across_missed_months(
    pool: asyncpg.Pool,
) -> None:
    """One missed month: the people billed that month; two: everyone billed in either,
    once (three in October, one of them gone and two more in November: five people)."""
    await pool.execute(
        "INSERT INTO covers SELECT p, $2, DATE '2025-10-01', e FROM unnest($1::text[], $3::date[])"
        " AS t(p, e)",
        ["r-1", "r-2", "r-3"],
        L30,
        [None, None, date(2025, 10, 31)],
    )
    await pool.execute(
        "INSERT INTO covers SELECT p, $2, DATE '2025-11-01', NULL FROM unnest($1::text[]) p",
        ["r-4", "r-5"],
        L30,
    )
    for period in ("2025-10", "2025-11"):
        async with pool.acquire() as conn, conn.transaction():
            await roll_period(conn, period)
    _, october = await arrears_now(pool, date(2025, 10, 16))
    assert (october[L30].months_unpaid, october[L30].people_at_risk) == (1, 3)
    _, both = await arrears_now(pool, date(2025, 11, 18))
    assert (both[L30].months_unpaid, both[L30].people_at_risk) == (2, 5)


async def test_holders_above_a_fallen_quota_are_reported_with_their_cost(
    pool: asyncpg.Pool,
) -> None:
    """The 2026 allocation pays for fewer places than people hold: all stay billed, and
    the summary and the export say how many are above and what they cost."""
    await pool.execute(
        "UPDATE budgets SET places = 2 WHERE funding_line = $1 AND fiscal_year = 2026", L30
    )
    people = [f"holder-{i}" for i in range(5)]
    await pool.execute(
        "INSERT INTO covers SELECT p, $2, DATE '2025-12-01', NULL FROM unnest($1::text[]) p",
        people,
        L30,
    )
    async with pool.acquire() as conn, conn.transaction():
        await roll_period(conn, "2026-01")
    [summary] = [s for s in await publish_changed(pool, date(2026, 1, 5)) if s.period == "2026-01"]
    assert (summary.participants, summary.places_funded, summary.above_quota) == (5, 2, 3)
    assert summary.above_quota_idr == 3 * 16_800
    export = await gather(pool, "2026-01", date(2026, 1, 5))
    [line] = [x for x in export.lines if x.funding_line == L30]
    assert (line.places_funded, line.above_quota, line.above_quota_idr) == (2, 3, 50_400)
