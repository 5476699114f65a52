"""The effective-dated contribution rate table (funding line, component, amount, validity)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

COMPONENTS = ("JKK", "JKM")


@dataclass(frozen=True)
class Rate:
    funding_line: str
    component: str
    amount_idr: int
    valid_from: date
    valid_to: date | None


@dataclass(frozen=True)
class RateTable:
    rates: tuple[Rate, ...]

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
        return (
            self.amount(funding_line, "JKK", period),
            self.amount(funding_line, "JKM", period),
        )
