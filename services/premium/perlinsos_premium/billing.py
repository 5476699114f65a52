"""The billing rule, in one place, and the month arithmetic it needs.

docs/domain.md: contributions are monthly and never prorated by day; a participant is billed
for every calendar month from the month cover starts to the month it ends, both
included. A cover that ends before it starts (an exit dated before cover start) is
billed for no month. Cover still running is billed up to the month being computed
(`through`). Months are Batam's (Asia/Jakarta); callers pass local dates.

The set-based SQL of month roll and month close (`ledger.py`, `closing.py`) states the
same rule as a WHERE clause; `tests/test_billing_sql.py` checks the two agree.
"""

from __future__ import annotations

import re
from datetime import date

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_index(day: date) -> int:
    return day.year * 12 + (day.month - 1)


def period_from_index(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def period_index(period: str) -> int:
    match = _PERIOD.match(period)
    if match is None:
        raise ValueError(f"not a YYYY-MM period: {period!r}")
    return int(match.group(1)) * 12 + int(match.group(2)) - 1


def is_period(text: str) -> bool:
    return _PERIOD.match(text) is not None


def first_day(period: str) -> date:
    i = period_index(period)
    return date(i // 12, i % 12 + 1, 1)


def next_period(period: str, months: int = 1) -> str:
    return period_from_index(period_index(period) + months)


def fiscal_year(period: str) -> int:
    """Indonesia's fiscal (APBD) year is the calendar year."""
    return period_index(period) // 12


def billed_periods(cover_start: date, cover_end: date | None, through: date) -> list[str]:
    """Every `YYYY-MM` billed for a cover, up to and including `through`'s month."""
    last = month_index(through)
    if cover_end is not None:
        if cover_end < cover_start:
            return []
        last = min(last, month_index(cover_end))
    return [period_from_index(i) for i in range(month_index(cover_start), last + 1)]
