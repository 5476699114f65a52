"""The billing rule, in one place.

A participant is billed for every calendar month from the month cover starts to the
month it ends, both included; contributions are monthly and never prorated by day.
Cover still running is billed up to the month being computed (`through`).
"""

from __future__ import annotations

from datetime import date


def month_index(day: date) -> int:
    return day.year * 12 + (day.month - 1)


def period_from_index(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def billed_periods(cover_start: date, cover_end: date | None, through: date) -> list[str]:
    """Every `YYYY-MM` billed for a cover, up to and including `through`'s month."""
    last = month_index(through)
    if cover_end is not None:
        if cover_end < cover_start:
            return []
        last = min(last, month_index(cover_end))
    return [period_from_index(i) for i in range(month_index(cover_start), last + 1)]
