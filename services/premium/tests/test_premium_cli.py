"""`perlinsos premium status` on a real PostgreSQL: arrears and places above the quota."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from perlinsos_premium.billing import first_day, next_period
from perlinsos_premium.cli import app
from perlinsos_premium.ledger import roll_period
from perlinsos_shared.clock import current_period
from perlinsos_shared.db import open_service_db

pytestmark = pytest.mark.db  # PostgreSQL only: no broker, no service process

L30 = "PERWAKO-30-2025"


def test_status_shows_missed_due_dates_people_at_risk_and_places_above_quota(
    cli_env: str,
) -> None:
    current = current_period()
    months = [next_period(current, -2), next_period(current, -1), current]

    async def setup() -> None:
        pool = await open_service_db(cli_env, "premium", pool_size=2)
        try:
            await pool.execute(
                "INSERT INTO covers SELECT p, $2, $3, NULL FROM unnest($1::text[]) p",
                ["a", "b", "c"],
                L30,
                first_day(months[0]),
            )
            await pool.execute(
                "INSERT INTO budgets (funding_line, fiscal_year, amount_idr, places)"
                " VALUES ($1, $2, 16800, 1) ON CONFLICT (funding_line, fiscal_year)"
                " DO UPDATE SET places = 1",
                L30,
                int(current[:4]),
            )
            for period in months:
                async with pool.acquire() as conn, conn.transaction():
                    await roll_period(conn, period)
        finally:
            await pool.close()

    asyncio.run(setup())
    shown = CliRunner().invoke(app, ["status"], env={"COLUMNS": "220"})
    assert shown.exit_code == 0, shown.output
    print(shown.output)  # shown with `pytest -s`
    out = " ".join(shown.output.split())
    # the two past months are unpaid past their due dates: the line is at lapse risk
    assert f"{L30}: LAPSE RISK" in out and months[0] in out
    assert "3 people lose their cover on" in out or "3 people lost their cover on" in out
    # one place funded this year, three billed: two above the quota, Rp33.600 this month
    row = next(line for line in shown.output.splitlines() if line.count(L30) and "Rp33.600" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[4:8] == ["1", "3", "2", "Rp33.600/month"], cells
