"""The billing rule and the cover rules, on plain values."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perlinsos_premium.billing import billed_periods, first_day, next_period, period_index
from perlinsos_premium.covers import Cover, Decision, apply_decision, billed_months

FAR = date(2040, 12, 31)


def test_same_month_start_and_end_is_one_month() -> None:
    assert billed_periods(date(2025, 10, 3), date(2025, 10, 28), FAR) == ["2025-10"]


def test_start_on_the_last_day_and_end_on_the_first_day_bill_both_months() -> None:
    assert billed_periods(date(2025, 9, 30), date(2025, 10, 1), FAR) == ["2025-09", "2025-10"]


def test_across_the_year_boundary() -> None:
    assert billed_periods(date(2025, 11, 15), date(2026, 2, 1), FAR) == [
        "2025-11",
        "2025-12",
        "2026-01",
        "2026-02",
    ]


def test_leap_day_start_and_end() -> None:
    assert billed_periods(date(2024, 2, 29), date(2024, 3, 1), FAR) == ["2024-02", "2024-03"]
    assert billed_periods(date(2028, 1, 31), date(2028, 2, 29), FAR) == ["2028-01", "2028-02"]


def test_exit_before_cover_start_bills_nothing() -> None:
    assert billed_periods(date(2025, 10, 5), date(2025, 10, 4), FAR) == []
    assert billed_periods(date(2025, 10, 5), date(2025, 9, 30), FAR) == []


def test_running_cover_is_billed_through_the_computed_month_only() -> None:
    assert billed_periods(date(2025, 12, 20), None, date(2026, 1, 1)) == ["2025-12", "2026-01"]
    assert billed_periods(date(2026, 2, 1), None, date(2026, 1, 31)) == []


def test_end_after_through_stops_at_through() -> None:
    assert billed_periods(date(2025, 6, 1), date(2025, 12, 31), date(2025, 7, 9)) == [
        "2025-06",
        "2025-07",
    ]


@given(
    st.dates(date(2020, 1, 1), date(2030, 1, 1)),
    st.integers(0, 800),
)
def test_month_count_is_calendar_months_inclusive(start: date, days: int) -> None:
    from datetime import timedelta

    end = start + timedelta(days=days)
    months = billed_periods(start, end, FAR)
    assert len(months) == (end.year - start.year) * 12 + end.month - start.month + 1
    assert months[0] == f"{start:%Y-%m}" and months[-1] == f"{end:%Y-%m}"
    assert len(set(months)) == len(months)


def test_period_arithmetic() -> None:
    assert next_period("2025-12") == "2026-01"
    assert first_day("2024-02") == date(2024, 2, 1)
    with pytest.raises(ValueError):
        period_index("2025-13")


L30, L49 = "PERWAKO-30-2025", "PERWAKO-49-2025"


def eligible(start: date, line: str = L30) -> Decision:
    return Decision("eligible", line, start, None)


def exited(end: date) -> Decision:
    return Decision("exited", None, None, end)


def test_a_promotion_starts_cover_and_an_exit_ends_it_on_its_effective_date() -> None:
    covers = apply_decision((), Decision("waitlisted", L30, None, None))
    assert covers == ()
    covers = apply_decision(covers, eligible(date(2025, 11, 3)))
    covers = apply_decision(covers, exited(date(2026, 1, 10)))
    assert covers == (Cover(L30, date(2025, 11, 3), date(2026, 1, 10)),)
    assert list(billed_months(covers, FAR)) == ["2025-11", "2025-12", "2026-01"]


def test_a_repeated_eligible_decision_changes_nothing_even_after_an_exit() -> None:
    covers = apply_decision((), eligible(date(2025, 10, 1)))
    covers = apply_decision(covers, exited(date(2025, 10, 20)))
    assert apply_decision(covers, eligible(date(2025, 10, 1))) == covers


def test_re_enrolment_after_exit_keeps_the_months_already_billed() -> None:
    covers = apply_decision((), eligible(date(2025, 9, 1)))
    covers = apply_decision(covers, exited(date(2025, 10, 15)))
    covers = apply_decision(covers, eligible(date(2025, 10, 20), L49))
    assert billed_months(covers, date(2025, 11, 5)) == {
        "2025-09": L30,
        "2025-10": L49,  # one line only for a shared month: the later cover's
        "2025-11": L49,
    }


def test_refusal_and_unknown_exit_do_not_touch_cover() -> None:
    covers = apply_decision((), eligible(date(2025, 10, 1)))
    assert apply_decision(covers, Decision("ineligible", None, None, None)) == covers
    assert apply_decision((), exited(date(2025, 10, 1))) == ()
