"""Payments, due dates and lapse risk: pure.

A line-month's contributions are due by the `due_day` of the following month (the 15th
under DOMAIN.md; the BPU due date is unconfirmed, so it is data in `payment_terms`). A
month not fully paid after its due date is overdue; it is `n` months overdue once `n`
due dates have passed without payment (its own and the following months'). A line with
any month `lapse_risk_months` (2) or more overdue is at lapse risk: participants lose
participation after three consecutive unpaid months.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from perlinsos_premium.billing import month_index, period_index


@dataclass(frozen=True)
class Terms:
    due_day: int = 15
    lapse_risk_months: int = 2


@dataclass(frozen=True)
class LineMonth:
    funding_line: str
    period: str
    amount_idr: int
    paid_idr: int

    @property
    def outstanding_idr(self) -> int:
        return max(0, self.amount_idr - self.paid_idr)


def due_date(period: str, terms: Terms) -> date:
    i = period_index(period) + 1
    return date(i // 12, i % 12 + 1, terms.due_day)


def months_overdue(m: LineMonth, today: date, terms: Terms) -> int:
    """How many due dates have passed with this month still not fully paid."""
    if m.outstanding_idr <= 0:
        return 0
    due = due_date(m.period, terms)
    if today <= due:
        return 0
    passed = month_index(today) - month_index(due)
    if today.day <= terms.due_day:
        passed -= 1
    return passed + 1


@dataclass
class LineArrearsState:
    funding_line: str
    overdue: dict[str, int] = field(default_factory=dict)  # period -> months overdue
    lapse_risk: bool = False
    paid_idr: int = 0
    outstanding_idr: int = 0


def line_arrears(
    months: Iterable[LineMonth], today: date, terms: Terms
) -> dict[str, LineArrearsState]:
    out: dict[str, LineArrearsState] = {}
    for m in months:
        state = out.setdefault(m.funding_line, LineArrearsState(m.funding_line))
        state.paid_idr += m.paid_idr
        state.outstanding_idr += m.outstanding_idr
        n = months_overdue(m, today, terms)
        if n > 0:
            state.overdue[m.period] = n
            if n >= terms.lapse_risk_months:
                state.lapse_risk = True
    for state in out.values():
        state.overdue = dict(sorted(state.overdue.items()))
    return out
