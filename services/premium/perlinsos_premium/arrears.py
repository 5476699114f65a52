"""Payments, due dates and lapse: pure (the holiday calendar is the `holidays` package's data).

BPJS Ketenagakerjaan's rule for non-wage (Bukan Penerima Upah, BPU) participants: a
month's contribution is due by the 15th of that contribution month itself, on a day
that is not a working day the next working day; BPU pay no late fine; after 3
consecutive unpaid months participation becomes inactive and the person must register
again from zero (Kompas and Kontan on the Permenaker rules; BPJamsostek Sulawesi Tengah,
July 2025; see docs/domain.md). The values (due day, month offset, grace days, lapse
threshold) are data in premium's `payment_terms` table, with their sources: `Terms`.

A line-month not fully paid is *missed* from the day after its due date (plus any grace);
from that day the line is at lapse risk, finance is warned, and the date cover lapses if
nothing more is paid is the day the `lapse_after_months`-th consecutive due date is
missed, counted from the earliest month still unpaid.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from perlinsos_premium.billing import next_period, period_index

if TYPE_CHECKING:
    from holidays import HolidayBase

NonWorking = Callable[[date], bool]


@dataclass(frozen=True)
class Terms:
    due_day: int = 15  # of the month below
    due_month_offset: int = 0  # 0: the contribution month itself (BPU rule)
    grace_days: int = 0  # days after the due date before a month counts as missed
    lapse_after_months: int = 3  # consecutive unpaid months that end participation


@cache
def _indonesia() -> HolidayBase:
    # imported on first use: the package takes about a second to import, which would
    # otherwise delay every premium start and every CLI command
    import holidays

    return holidays.country_holidays("ID")


def indonesian_non_working(day: date) -> bool:
    """Saturdays, Sundays and Indonesia's national holidays (the `holidays` package; its
    Islamic dates for future years are estimates until the government fixes them)."""
    return day.weekday() >= 5 or day in _indonesia()


def due_date(period: str, terms: Terms, non_working: NonWorking = indonesian_non_working) -> date:
    """The day a contribution month must be paid by: the due day of the contribution
    month (plus the offset), moved to the next working day."""
    year, month0 = divmod(period_index(period) + terms.due_month_offset, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    day = date(year, month0 + 1, min(terms.due_day, last))
    while non_working(day):
        day += timedelta(days=1)
    return day


def missed_on(period: str, terms: Terms, non_working: NonWorking = indonesian_non_working) -> date:
    """The first day on which this month, still unpaid, counts as missed."""
    return due_date(period, terms, non_working) + timedelta(days=terms.grace_days + 1)


@dataclass(frozen=True)
class LineMonth:
    funding_line: str
    period: str
    amount_idr: int
    paid_idr: int
    participants: int = 0  # billed that month (each person once per line-month)

    @property
    def outstanding_idr(self) -> int:
        return max(0, self.amount_idr - self.paid_idr)


def months_overdue(
    m: LineMonth, today: date, terms: Terms, non_working: NonWorking = indonesian_non_working
) -> int:
    """How many due dates (this month's and the following months') have been missed with
    this month still not fully paid."""
    if m.outstanding_idr <= 0:
        return 0
    n = 0
    while missed_on(next_period(m.period, n), terms, non_working) <= today:
        n += 1
    return n


@dataclass
class LineArrearsState:
    funding_line: str
    overdue: dict[str, int] = field(default_factory=dict)  # period -> due dates missed
    paid_idr: int = 0
    outstanding_idr: int = 0
    first_missed: str | None = None  # the earliest month still unpaid past its due date
    missed_since: date | None = None  # the day that month was first missed
    lapses_on: date | None = None  # participation ends that day if nothing more is paid
    people_at_risk: int = 0  # participants billed in the missed months (from the ledger)

    @property
    def months_unpaid(self) -> int:
        """Months of this line unpaid past their due date."""
        return len(self.overdue)

    @property
    def lapse_risk(self) -> bool:
        """From the first missed due date on: participants may lose their cover."""
        return bool(self.overdue)

    def lapsed(self, today: date) -> bool:
        return self.lapses_on is not None and today >= self.lapses_on


def line_arrears(
    months: Iterable[LineMonth],
    today: date,
    terms: Terms,
    non_working: NonWorking = indonesian_non_working,
) -> dict[str, LineArrearsState]:
    out: dict[str, LineArrearsState] = {}
    for m in months:
        state = out.setdefault(m.funding_line, LineArrearsState(m.funding_line))
        state.paid_idr += m.paid_idr
        state.outstanding_idr += m.outstanding_idr
        n = months_overdue(m, today, terms, non_working)
        if n > 0:
            state.overdue[m.period] = n
    for state in out.values():
        state.overdue = dict(sorted(state.overdue.items()))
        if state.overdue:
            first = next(iter(state.overdue))
            state.first_missed = first
            state.missed_since = missed_on(first, terms, non_working)
            last = next_period(first, terms.lapse_after_months - 1)
            state.lapses_on = missed_on(last, terms, non_working)
    return out


def arrears_fields(state: LineArrearsState | None) -> dict[str, Any]:
    """A line's arrears as the summary extras and the export carry them."""
    return {
        "lapse_risk": bool(state and state.lapse_risk),
        "months_unpaid": state.months_unpaid if state else 0,
        "people_at_risk": state.people_at_risk if state else 0,
        "lapses_on": state.lapses_on if state else None,
    }
