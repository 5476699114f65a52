"""BPU due dates, missed months and lapse dates, on plain values (and Indonesia's holidays)."""

from __future__ import annotations

from datetime import date

import pytest

from perlinsos_premium.arrears import (
    LineMonth,
    Terms,
    due_date,
    indonesian_non_working,
    line_arrears,
    missed_on,
    months_overdue,
)
from perlinsos_premium.budget import above_quota, above_quota_cost

L = "PERWAKO-30-2025"
BPU = Terms()  # due the 15th of the contribution month, no grace, inactive after 3


@pytest.mark.parametrize(
    ("period", "due"),
    [
        ("2025-10", date(2025, 10, 15)),  # a Wednesday: the contribution month itself
        ("2025-12", date(2025, 12, 15)),  # not the following month
        ("2025-11", date(2025, 11, 17)),  # 15th a Saturday: Monday
        ("2026-03", date(2026, 3, 16)),  # 15th a Sunday: Monday
        ("2024-09", date(2024, 9, 17)),  # Sunday, then Maulid Nabi on Monday: Tuesday
        ("2027-08", date(2027, 8, 16)),  # Maulid Nabi on Sunday the 15th: Monday
        ("2029-03", date(2029, 3, 16)),  # Nyepi on Thursday the 15th: Friday
        ("2026-08", date(2026, 8, 18)),  # Saturday, Sunday, Independence Day: Tuesday
    ],
)
def test_due_dates_across_months_weekends_and_holidays(period: str, due: date) -> None:
    assert due_date(period, BPU) == due
    assert not indonesian_non_working(due)


def test_the_calendar_is_pluggable_for_cuti_bersama() -> None:
    # a joint leave day the government adds (not in the package): the next working day
    cuti = {date(2025, 12, 15)}
    assert due_date("2025-12", BPU, lambda d: d.weekday() >= 5 or d in cuti) == date(2025, 12, 16)


def test_terms_are_data() -> None:
    old_rule = Terms(due_day=15, due_month_offset=1)  # what premium assumed before
    assert due_date("2025-09", old_rule) == date(2025, 10, 15)
    assert missed_on("2025-10", Terms(grace_days=3)) == date(2025, 10, 19)
    assert due_date("2026-02", Terms(due_day=31)) == date(2026, 3, 2)  # clamped, then Monday


def test_a_month_is_missed_the_day_after_its_due_date() -> None:
    m = LineMonth(L, "2025-10", 16_800, 0)
    assert missed_on("2025-10", BPU) == date(2025, 10, 16)
    assert months_overdue(m, date(2025, 10, 15), BPU) == 0  # still the due date
    assert months_overdue(m, date(2025, 10, 16), BPU) == 1
    assert months_overdue(m, date(2025, 11, 17), BPU) == 1  # November's due date (Monday)
    assert months_overdue(m, date(2025, 11, 18), BPU) == 2
    assert months_overdue(LineMonth(L, "2025-10", 16_800, 16_800), date(2026, 6, 1), BPU) == 0
    assert months_overdue(LineMonth(L, "2025-10", 16_800, 16_799), date(2025, 10, 16), BPU) == 1


def test_lapse_risk_from_the_first_missed_due_date_with_the_lapse_date() -> None:
    months = [
        LineMonth(L, "2025-09", 168_000, 168_000),  # paid
        LineMonth(L, "2025-10", 168_000, 0),
        LineMonth(L, "2025-11", 168_000, 0),
    ]
    on_due = line_arrears(months, date(2025, 10, 15), BPU)[L]
    assert not on_due.lapse_risk and on_due.lapses_on is None and on_due.months_unpaid == 0
    first = line_arrears(months, date(2025, 10, 16), BPU)[L]
    assert first.lapse_risk and first.months_unpaid == 1 and first.first_missed == "2025-10"
    assert first.missed_since == date(2025, 10, 16)
    # October, November (due Mon 17 Nov) and December (due Mon 15 Dec) unpaid: inactive
    # from the day after December's due date
    assert first.lapses_on == date(2025, 12, 16)
    later = line_arrears(months, date(2025, 11, 18), BPU)[L]
    assert later.overdue == {"2025-10": 2, "2025-11": 1} and later.months_unpaid == 2
    assert later.lapses_on == date(2025, 12, 16) and not later.lapsed(date(2025, 12, 15))
    assert later.lapsed(date(2025, 12, 16))
    assert later.outstanding_idr == 336_000 and later.paid_idr == 168_000


@pytest.mark.parametrize(
    ("first_missed", "lapses_on"),
    [
        ("2026-01", date(2026, 3, 17)),  # Jan, Feb, Mar: 15 Mar a Sunday -> due 16, lapse 17
        ("2027-06", date(2027, 8, 17)),  # Aug: due Mon 16 (Maulid 15th), lapse Tue 17
        ("2024-07", date(2024, 9, 18)),  # Sep 2024: due Tue 17, lapse Wed 18
    ],
)
def test_lapse_dates(first_missed: str, lapses_on: date) -> None:
    state = line_arrears([LineMonth(L, first_missed, 1, 0)], date(2030, 1, 1), BPU)[L]
    assert state.lapses_on == lapses_on


def test_a_paid_line_is_not_at_risk() -> None:
    state = line_arrears([LineMonth(L, "2025-09", 100, 100)], date(2025, 12, 1), BPU)[L]
    assert not state.lapse_risk and state.outstanding_idr == 0 and state.lapses_on is None


# --- the quota falls at the year change -------------------------------------------------


def test_holders_above_a_fallen_quota_and_their_cost() -> None:
    # transport: 13,500 places in 2025, 10,285 in 2026; 12,000 still hold a place
    assert above_quota(12_000, 10_285) == 1_715
    assert above_quota(12_000, 13_500) == 0
    assert above_quota(12_000, None) == 0  # places not known: nothing claimed
    assert above_quota_cost(12_000 * 16_800, 12_000, 1_715) == 1_715 * 16_800
    assert above_quota_cost(0, 0, 0) == 0
