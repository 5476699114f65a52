"""The rule data: versions per line chosen by date, quotas and funding windows as data."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from perlinsos_eligibility.rules import (
    RuleDataError,
    load_rule_book,
    parse_rule_set,
)
from perlinsos_shared.events import FundingLine, Occupation

L49, L30, L3 = FundingLine.PERWAKO_49_2025, FundingLine.PERWAKO_30_2025, FundingLine.PERWAKO_3_2023
BOOK = load_rule_book()


@pytest.mark.parametrize(
    ("line", "day", "quota"),
    [
        (L49, date(2025, 10, 1), 12_872),
        (L49, date(2026, 3, 1), 12_872),
        (L30, date(2025, 7, 1), 13_500),
        (L30, date(2026, 7, 1), 10_285),
        (L3, date(2025, 1, 1), 5_000),
        (L3, date(2026, 12, 31), 6_000),
        (L3, date(2027, 1, 1), 0),  # no 2027 data yet: nothing funded
    ],
)
def test_quota_per_line_and_fiscal_year(line: FundingLine, day: date, quota: int) -> None:
    rule_set = BOOK.in_force(line, day)
    assert rule_set is not None
    assert rule_set.quota_on(day) == quota


@pytest.mark.parametrize(
    ("line", "day", "version"),
    [
        (L30, date(2025, 5, 31), "PERWAKO-30-2025@2025.1"),  # before the first: first's criteria
        (L30, date(2025, 6, 1), "PERWAKO-30-2025@2025.1"),
        (L30, date(2025, 12, 31), "PERWAKO-30-2025@2025.1"),
        (L30, date(2026, 1, 1), "PERWAKO-30-2025@2026.1"),
        (L49, date(2025, 9, 25), "PERWAKO-49-2025@2025.1"),
        (L49, date(2026, 1, 1), "PERWAKO-49-2025@2026.1"),
        (L3, date(2027, 6, 1), "PERWAKO-3-2023@2026.1"),  # the latest stays in force
    ],
)
def test_rule_version_chosen_by_date(line: FundingLine, day: date, version: str) -> None:
    rule_set = BOOK.in_force(line, day)
    assert rule_set is not None and rule_set.label == version


@pytest.mark.parametrize(
    ("line", "day", "funded"),
    [
        (L30, date(2025, 5, 31), False),  # transport first stage: June-December 2025
        (L30, date(2025, 6, 1), True),
        (L30, date(2025, 12, 31), True),
        (L49, date(2025, 9, 25), False),  # before the launch
        (L49, date(2025, 9, 26), True),
        (L3, date(2025, 1, 1), True),
        (L3, date(2026, 11, 24), True),
        (L3, date(2027, 1, 1), False),  # 2027 not funded until its data is added
    ],
)
def test_funding_window(line: FundingLine, day: date, funded: bool) -> None:
    rule_set = BOOK.in_force(line, day)
    assert rule_set is not None and rule_set.funded_on(day) is funded


def test_next_funded_day() -> None:
    transport = BOOK.in_force(L30, date(2025, 3, 1))
    assert transport is not None
    assert transport.next_funded_day(date(2025, 3, 10)) == date(2025, 6, 1)
    community = BOOK.in_force(L49, date(2025, 9, 1))
    assert community is not None
    assert community.next_funded_day(date(2025, 9, 1)) == date(2025, 9, 26)
    assert community.next_funded_day(date(2026, 2, 1)) is None  # 2025.1 funds only 2025


@pytest.mark.parametrize(
    ("occupation", "line"),
    [
        (Occupation.KETUA_RT, L49),
        (Occupation.KETUA_RW, L49),
        (Occupation.KADER_POSYANDU, L49),
        (Occupation.KADER_SIAGA, L49),
        (Occupation.KETUA_LPM, L49),
        (Occupation.OJEK_DARING, L30),
        (Occupation.BECAK, L30),
        (Occupation.BOAT_PANCUNG, L30),
        (Occupation.NELAYAN, L3),
    ],
)
def test_occupation_to_line(occupation: Occupation, line: FundingLine) -> None:
    assert BOOK.line_of(occupation, date(2026, 5, 1)) == line


def test_in_force_until_is_the_day_before_the_next_version() -> None:
    first = BOOK.by_label("PERWAKO-3-2023@2025.1")
    latest = BOOK.by_label("PERWAKO-3-2023@2026.1")
    assert first is not None and latest is not None
    assert BOOK.in_force_until(first) == date(2025, 12, 31)
    assert BOOK.in_force_until(latest) is None


def _copy_packaged(to: Path) -> None:
    for rule_set in BOOK.sets:
        folder = to / rule_set.funding_line.value
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{rule_set.version}.yaml").write_text(
            yaml.safe_dump(
                {
                    "funding_line": rule_set.funding_line.value,
                    "version": rule_set.version,
                    "in_force_from": rule_set.in_force_from,
                    "occupations": sorted(o.value for o in rule_set.occupations),
                    "age": {
                        "min_years": rule_set.min_age,
                        "max_years_exclusive": rule_set.max_age_exclusive,
                    },
                    "funding": {
                        y: {"quota": f.quota, "funded_months": sorted(f.funded_months)}
                        for y, f in rule_set.funding.items()
                    },
                }
            )
        )


def test_adding_2027_is_a_data_change(tmp_path: Path) -> None:
    _copy_packaged(tmp_path)
    (tmp_path / "PERWAKO-3-2023" / "2027.1.yaml").write_text(
        "funding_line: PERWAKO-3-2023\nversion: '2027.1'\nin_force_from: 2027-01-01\n"
        "occupations: [NELAYAN]\nage: {min_years: 18, max_years_exclusive: 65}\n"
        "funding: {2027: {quota: 7000, funded_months: [1,2,3,4,5,6,7,8,9,10,11,12]}}\n"
    )
    book = load_rule_book(tmp_path)
    chosen = book.in_force(L3, date(2027, 2, 1))
    assert chosen is not None
    assert chosen.label == "PERWAKO-3-2023@2027.1"
    assert chosen.quota_on(date(2027, 2, 1)) == 7000 and chosen.min_age == 18
    previous = book.by_label("PERWAKO-3-2023@2026.1")
    assert previous is not None and book.in_force_until(previous) == date(2026, 12, 31)


GOOD = {
    "funding_line": "PERWAKO-3-2023",
    "version": "x",
    "in_force_from": "2025-01-01",
    "occupations": ["NELAYAN"],
    "age": {"min_years": 17, "max_years_exclusive": 65},
    "funding": {2025: {"quota": 1, "funded_months": [1]}},
}


@pytest.mark.parametrize(
    "change",
    [
        {"funding_line": "PERWAKO-99-2099"},
        {"occupations": ["ASTRONAUT"]},
        {"age": {"min_years": 65, "max_years_exclusive": 17}},
        {"in_force_from": "soon"},
        {"funding": {2025: {"quota": -1, "funded_months": [1]}}},
        {"funding": {2025: {"quota": 1, "funded_months": [13]}}},
        {"age": None},
    ],
)
def test_bad_rule_data_is_refused(change: dict[str, object]) -> None:
    parse_rule_set(GOOD)
    with pytest.raises(RuleDataError):
        parse_rule_set({**GOOD, **change})
