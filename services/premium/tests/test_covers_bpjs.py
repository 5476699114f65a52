"""BPJS's answers as cover changes: plain values."""

from __future__ import annotations

from datetime import date

from perlinsos_premium.covers import Cover, Decision, apply_decision, billed_months

START = date(2026, 3, 10)


def test_refused_as_a_member_already_ends_cover_before_it_began_and_bills_nothing() -> None:
    covers = apply_decision((), Decision("eligible", "PERWAKO-30-2025", START, None))
    refused = Decision("ineligible", "PERWAKO-30-2025", START, date(2026, 3, 9))
    after = apply_decision(covers, refused)
    assert after == (Cover("PERWAKO-30-2025", START, date(2026, 3, 9)),)
    assert billed_months(after, date(2026, 6, 1)) == {}
    assert apply_decision(after, refused) == after  # the same decision again: no change


def test_an_ineligible_decision_without_cover_end_leaves_cover_alone() -> None:
    covers = apply_decision((), Decision("eligible", "PERWAKO-30-2025", START, None))
    assert apply_decision(covers, Decision("ineligible", "PERWAKO-30-2025", None, None)) == covers


def test_bpjs_cover_start_moves_the_open_cover() -> None:
    covers = apply_decision((), Decision("eligible", "PERWAKO-30-2025", START, None))
    moved = apply_decision(covers, Decision("eligible", "PERWAKO-30-2025", date(2026, 2, 1), None))
    assert moved == (Cover("PERWAKO-30-2025", date(2026, 2, 1)),)
    assert sorted(billed_months(moved, date(2026, 3, 31))) == ["2026-02", "2026-03"]
