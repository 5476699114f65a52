"""The effective-dated contribution rate table (funding line, component, amount, validity).

Rates are data (premium's `rates` table), corrected by the city without a release. For
one line and component at most one row may be in force on any day: two overlapping rows
would leave the amount to whichever the database returns first, so `RateTable` refuses
them, and premium refuses to start on such a table (`check_rates` at start-up).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from itertools import pairwise

COMPONENTS = ("JKK", "JKM")


@dataclass(frozen=True)
class Rate:
    funding_line: str
    component: str
    amount_idr: int
    valid_from: date
    valid_to: date | None


class RateTableError(ValueError):
    """A rate table premium must not bill from (overlapping or backwards rows)."""


def rate_problems(rates: Iterable[Rate]) -> list[str]:
    """Why these rows cannot be one rate table (empty: they can)."""
    problems: list[str] = []
    by_key: dict[tuple[str, str], list[Rate]] = {}
    for r in rates:
        if r.valid_to is not None and r.valid_to < r.valid_from:
            problems.append(
                f"{r.funding_line} {r.component}: valid_to {r.valid_to} before "
                f"valid_from {r.valid_from}"
            )
        by_key.setdefault((r.funding_line, r.component), []).append(r)
    for (line, component), rows in sorted(by_key.items()):
        rows.sort(key=lambda r: r.valid_from)
        for before, after in pairwise(rows):
            if before.valid_to is None or before.valid_to >= after.valid_from:
                until = before.valid_to.isoformat() if before.valid_to else "open-ended"
                problems.append(
                    f"{line} {component}: the row from {before.valid_from} ({until}) overlaps "
                    f"the row from {after.valid_from}"
                )
    return problems


@dataclass(frozen=True)
class RateTable:
    rates: tuple[Rate, ...]
    # (line, period) -> both amounts, as found: every participant of a batch is priced for
    # the same few months (the table itself never changes)
    _monthly: dict[tuple[str, str], tuple[int, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        problems = rate_problems(self.rates)
        if problems:
            raise RateTableError("rate table refused: " + "; ".join(problems))

    def amount(self, funding_line: str, component: str, period: str) -> int:
        """The rate in force on the first day of the period; a missing rate is an error."""
        year, month = (int(p) for p in period.split("-"))
        day = date(year, month, 1)
        for r in self.rates:
            if (
                r.funding_line == funding_line
                and r.component == component
                and r.valid_from <= day
                and (r.valid_to is None or day <= r.valid_to)
            ):
                return r.amount_idr
        raise LookupError(f"no {component} rate for {funding_line} in {period}")

    def monthly(self, funding_line: str, period: str) -> tuple[int, int]:
        found = self._monthly.get((funding_line, period))
        if found is None:  # a missing rate raises every time it is asked for
            found = self._monthly[funding_line, period] = (
                self.amount(funding_line, "JKK", period),
                self.amount(funding_line, "JKM", period),
            )
        return found
