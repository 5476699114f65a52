"""Reconciling wanted months with billed ones: open months in place, closed by adjustment."""

from __future__ import annotations

from datetime import date

import pytest

from perlinsos_premium.budget import crossed
from perlinsos_premium.rates import Rate, RateTable, RateTableError, rate_problems
from perlinsos_premium.reconcile import Adjustment, LedgerRow, first_open_period, plan

L = "PERWAKO-30-2025"
RATES = RateTable(
    (
        Rate(L, "JKK", 10_000, date(2023, 1, 1), None),
        Rate(L, "JKM", 6_800, date(2023, 1, 1), date(2026, 3, 31)),
        Rate(L, "JKM", 7_000, date(2026, 4, 1), None),
    )
)


def test_new_months_in_open_periods_become_ledger_rows_at_the_rate_in_force() -> None:
    changes = plan("p1", {"2026-03": L, "2026-04": L}, {}, {}, set(), RATES)
    assert changes.add == [
        LedgerRow("p1", "2026-03", L, 10_000, 6_800),
        LedgerRow("p1", "2026-04", L, 10_000, 7_000),
    ]
    assert not changes.remove and not changes.adjust


def test_nothing_changes_when_billed_equals_wanted() -> None:
    ledger = {("2025-10", L): (10_000, 6_800)}
    assert not plan("p1", {"2025-10": L}, ledger, {}, set(), RATES)


def test_back_dated_exit_corrects_a_closed_month_in_the_first_open_month() -> None:
    ledger = {("2025-10", L): (10_000, 6_800), ("2025-11", L): (10_000, 6_800)}
    closed = {("2025-10", L)}
    changes = plan("p1", {}, ledger, {}, closed, RATES)  # exit before cover start
    assert changes.remove == [LedgerRow("p1", "2025-11", L, 10_000, 6_800)]
    assert changes.adjust == [
        Adjustment("p1", "2025-10", L, "2025-11", -10_000, -6_800, "KOREKSI_KURANG")
    ]
    # applied once, the same plan again is a no-op
    assert not plan("p1", {}, {("2025-10", L): (10_000, 6_800)}, {("2025-10", L): (-10_000, -6_800)}, closed, RATES)  # fmt: skip


def test_late_cover_in_a_closed_month_is_a_positive_adjustment_past_closed_months() -> None:
    closed = {("2025-10", L), ("2025-11", L)}
    changes = plan("p1", {"2025-10": L}, {}, {}, closed, RATES)
    assert changes.adjust[0].booked_period == "2025-12"
    assert changes.adjust[0].amount_idr == 16_800
    assert first_open_period(L, "2025-12", closed) == "2026-01"


def test_missing_rate_is_an_error_not_a_zero() -> None:
    with pytest.raises(LookupError):
        plan("p1", {"2022-12": L}, {}, {}, set(), RATES)


def test_budget_thresholds() -> None:
    transport_2025 = 2_721_600_000
    assert crossed(transport_2025, 2_177_280_000 - 1) == []
    assert crossed(transport_2025, 2_177_280_000) == [80]
    assert crossed(transport_2025, transport_2025) == [80, 100]
    assert crossed(0, 1) == []


# --- the rate table refuses overlapping rows -------------------------------------------


@pytest.mark.parametrize(
    ("first_to", "second_from"),
    [
        (None, date(2026, 4, 1)),  # an open-ended row and a later one
        (date(2026, 4, 1), date(2026, 4, 1)),  # one shared day
        (date(2026, 12, 31), date(2026, 4, 1)),  # the later row starts inside the first
    ],
)
def test_overlapping_rows_for_one_line_and_component_are_refused(
    first_to: date | None, second_from: date
) -> None:
    rows = (
        Rate(L, "JKM", 6_800, date(2023, 1, 1), first_to),
        Rate(L, "JKM", 3_400, second_from, None),
    )
    assert len(rate_problems(rows)) == 1
    with pytest.raises(RateTableError, match=f"{L} JKM"):
        RateTable(rows)


def test_adjacent_rows_and_other_lines_or_components_do_not_overlap() -> None:
    rows = (
        Rate(L, "JKM", 6_800, date(2023, 1, 1), date(2026, 3, 31)),
        Rate(L, "JKM", 7_000, date(2026, 4, 1), None),
        Rate(L, "JKK", 10_000, date(2023, 1, 1), None),
        Rate("PERWAKO-3-2023", "JKM", 6_800, date(2023, 1, 1), None),
    )
    assert rate_problems(rows) == []
    assert RateTable(rows).amount(L, "JKM", "2026-04") == 7_000


def test_a_row_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(RateTableError, match="before valid_from"):
        RateTable((Rate(L, "JKK", 10_000, date(2026, 1, 1), date(2025, 12, 31)),))


def test_monthly_amounts_are_the_rates_in_force_however_often_asked() -> None:
    for period, expected in (("2026-03", (10_000, 6_800)), ("2026-04", (10_000, 7_000))):
        for _ in range(3):  # kept after the first time: the same amounts
            assert RATES.monthly(L, period) == expected
            assert expected == (RATES.amount(L, "JKK", period), RATES.amount(L, "JKM", period))
    assert RATES == RateTable(RATES.rates)  # what was kept is no part of the table's value
    for _ in range(2):  # a missing rate is an error every time
        with pytest.raises(LookupError, match="no JKK rate"):
            RATES.monthly("PERWAKO-3-2023", "2026-03")
