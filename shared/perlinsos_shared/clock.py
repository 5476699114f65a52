"""Batam's clock: calendar dates and months are Asia/Jakarta (UTC+07:00)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

BATAM_TZ = ZoneInfo("Asia/Jakarta")


def now_local() -> datetime:
    return datetime.now(BATAM_TZ)


def today_local() -> date:
    return now_local().date()


def period_of(day: date) -> str:
    """The contribution month `YYYY-MM` a date falls in."""
    return f"{day.year:04d}-{day.month:02d}"


def current_period() -> str:
    return period_of(today_local())
