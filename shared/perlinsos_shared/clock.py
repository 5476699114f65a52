"""Batam's clock: calendar dates and months are Asia/Jakarta (UTC+07:00).

`PERLINSOS_CLOCK_SHIFT_DAYS` (rehearsals and tests only, never in production) moves a
process's calendar by whole days: a stack started with -40 acts as it would have 40 days
ago, so what happens across days and months (an exit, then a re-enrolment weeks later)
can be run on real processes. It is read once, at the first reading of the clock.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

BATAM_TZ = ZoneInfo("Asia/Jakarta")
CLOCK_SHIFT_ENV = "PERLINSOS_CLOCK_SHIFT_DAYS"


@cache
def _shift() -> timedelta:
    raw = os.environ.get(CLOCK_SHIFT_ENV, "").strip()
    return timedelta(days=int(raw)) if raw else timedelta(0)


def now_local() -> datetime:
    return datetime.now(BATAM_TZ) + _shift()


def today_local() -> date:
    return now_local().date()


def period_of(day: date) -> str:
    """The contribution month `YYYY-MM` a date falls in."""
    return f"{day.year:04d}-{day.month:02d}"


def current_period() -> str:
    return period_of(today_local())
