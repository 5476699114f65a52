"""The criteria and the allocation, on plain values (no broker, no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.id import nik as stdnum_nik

from perlinsos_eligibility.domain import (
    Applicant,
    InQueue,
    above_quota,
    age_on,
    allocate,
    assess,
    free_places,
    window_check,
)
from perlinsos_eligibility.rules import load_rule_book
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.events import Address, FundingLine, Occupation

BOOK = load_rule_book()
DAY = date(2026, 3, 2)
BATAM = Address(kecamatan="Sei Beduk", kelurahan="Tanjung Piayu")


def applicant(**kw: object) -> Applicant:
    base: dict[str, object] = {
        "birth_date": date(1980, 5, 17),
        "address": BATAM,
        "occupation": Occupation.OJEK_DARING,
        "existing_bpjs_tk": False,
    }
    base.update(kw)
    return Applicant(**base)  # type: ignore[arg-type]


def codes(a: Applicant, day: date = DAY) -> list[str]:
    return [r.code for r in assess(a, BOOK, day).reasons]


@pytest.mark.parametrize(
    ("kecamatan", "kelurahan", "ok"),
    [
        ("Sei Beduk", "Tanjung Piayu", True),
        ("SUNGAI BEDUK", "Tj. Piayu", True),
        ("Kec. Batam Kota", "Kel. Belian", True),
        ("sagulung", "sei  langkai", True),
        ("Batu Aji", "Belian", False),  # a Batam kelurahan, but not in that kecamatan
        ("Tanjungpinang Timur", "Kampung Bulang", False),  # another city in Kepri
        ("Sei Beduk", "", False),
        (None, None, False),
        ("Belakang Padang", "Pulau Terung", True),  # official (Kepmendagri 300.2.2-2138/2025)
        ("Belakang Padang", "Pulau Terong", True),  # the old spelling
        ("Bulang", "Pulau Setokok", True),  # official
        ("Bulang", "Setokok", True),  # the old spelling
    ],
)
def test_domicile_is_the_ktp_address(
    kecamatan: str | None, kelurahan: str | None, ok: bool
) -> None:
    a = applicant(address=Address(kecamatan=kecamatan, kelurahan=kelurahan))
    assert ("DOMICILE_NOT_BATAM" not in codes(a)) is ok


def test_the_nik_prefix_never_decides_domicile() -> None:
    # The rules cannot read the NIK: an applicant carries none, so a NIK first issued
    # elsewhere (e.g. 1371, Padang) cannot refuse a Batam KTP address, nor a 2171 NIK
    # admit an address elsewhere. Only the address decides.
    assert "nik" not in Applicant.__dataclass_fields__
    assert assess(applicant(), BOOK, DAY).passed
    elsewhere = applicant(address=Address(kecamatan="Padang Barat", kelurahan="Olo"))
    assert "DOMICILE_NOT_BATAM" in codes(elsewhere)


@pytest.mark.parametrize(
    ("birth", "day", "ok"),
    [
        (date(1961, 3, 2), date(2026, 3, 2), False),  # 65th birthday on the cover start
        (date(1961, 3, 3), date(2026, 3, 2), True),  # 65 tomorrow: still 64
        (date(1961, 3, 1), date(2026, 3, 2), False),
        (date(2009, 3, 2), date(2026, 3, 2), True),  # 17th birthday: the lower bound
        (date(2009, 3, 3), date(2026, 3, 2), False),  # 16 until tomorrow
        (date(1960, 2, 29), date(2025, 2, 28), True),  # leap-day birth: 65 on 1 March
        (date(1960, 2, 29), date(2025, 3, 1), False),
    ],
)
def test_age_bounds_at_cover_start(birth: date, day: date, ok: bool) -> None:
    a = applicant(birth_date=birth, occupation=Occupation.NELAYAN)
    assert ("AGE_OUT_OF_RANGE" not in codes(a, day)) is ok


@pytest.mark.parametrize(
    ("nik", "day", "ok"),
    [
        # women: 40 added to the day of birth; 4503 61 -> 5 March 1961
        ("2171034503610002", date(2026, 3, 4), True),
        ("2171034503610002", date(2026, 3, 5), False),
        # a man born the same day for comparison: 0503 61
        ("2171030503610003", date(2026, 3, 5), False),
        # a woman born on the 31st: day 71
        ("2171037112800001", date(2026, 3, 2), True),
    ],
)
def test_birth_dates_from_womens_niks(nik: str, day: date, ok: bool) -> None:
    birth = stdnum_nik.get_birth_date(nik)
    assert birth.day <= 31  # the +40 has been taken off
    a = applicant(birth_date=birth, occupation=Occupation.KADER_POSYANDU)
    assert ("AGE_OUT_OF_RANGE" not in codes(a, day)) is ok


@pytest.mark.parametrize(
    ("birth", "age"),
    [(date(2009, 3, 3), 16), (date(1961, 3, 2), 65)],  # too young, too old
)
def test_an_age_refusal_names_both_bounds_from_the_rule_data(birth: date, age: int) -> None:
    (refusal,) = assess(applicant(birth_date=birth), BOOK, DAY).reasons
    assert refusal.code == "AGE_OUT_OF_RANGE"
    assert refusal.params == {"min_age": 17, "max_age": 65, "oldest": 64, "age": age}
    assert refusal.message == (
        "Usia pada tanggal mulai perlindungan harus 17 tahun sampai di bawah 65 tahun; "
        f"usia Anda {age} tahun"
    )


def test_age_on() -> None:
    assert age_on(date(2000, 1, 1), date(2025, 12, 31)) == 25
    assert age_on(date(2000, 1, 1), date(2026, 1, 1)) == 26


@pytest.mark.parametrize(("member", "ok"), [(True, False), (False, True)])
def test_not_already_a_bpjs_member(member: bool, ok: bool) -> None:
    assert ("ALREADY_BPJS_MEMBER" not in codes(applicant(existing_bpjs_tk=member))) is ok


@pytest.mark.parametrize(
    ("occupation", "line"),
    [
        (Occupation.KETUA_LPM, FundingLine.PERWAKO_49_2025),
        (Occupation.BOAT_PANCUNG, FundingLine.PERWAKO_30_2025),
        (Occupation.NELAYAN, FundingLine.PERWAKO_3_2023),
    ],
)
def test_funding_line_and_version_in_the_assessment(
    occupation: Occupation, line: FundingLine
) -> None:
    a = assess(applicant(occupation=occupation), BOOK, DAY)
    assert a.passed and a.funding_line == line
    assert a.rule_version == f"{line.value}@2026.1"


def test_several_failures_are_all_reported() -> None:
    a = applicant(
        address=Address(kecamatan="Bintan Timur", kelurahan="Kijang Kota"),
        birth_date=date(1950, 1, 1),
        existing_bpjs_tk=True,
    )
    assert codes(a) == ["DOMICILE_NOT_BATAM", "AGE_OUT_OF_RANGE", "ALREADY_BPJS_MEMBER"]
    checks = assess(a, BOOK, DAY).checks
    assert [c.rule for c in checks] == ["OCCUPATION", "DOMICILE", "AGE", "BPJS_MEMBERSHIP"]
    assert [c.passed for c in checks] == [True, False, False, False]


def test_explanations_are_indonesian() -> None:
    reasons = assess(applicant(existing_bpjs_tk=True), BOOK, DAY).reasons
    assert reasons[0].message.startswith("Sudah terdaftar")


@pytest.mark.parametrize(
    ("day", "holders", "free"),
    [
        (date(2026, 1, 1), 0, 10_285),
        (date(2026, 1, 1), 10_284, 1),
        (date(2026, 1, 1), 10_285, 0),
        (date(2026, 1, 1), 13_000, 0),  # carried over above a lower new quota
        (date(2025, 5, 1), 0, 0),  # outside the 2025 window (June-December)
        (date(2025, 6, 1), 13_499, 1),
    ],
)
def test_free_places(day: date, holders: int, free: int) -> None:
    rule_set = BOOK.in_force(FundingLine.PERWAKO_30_2025, day)
    assert rule_set is not None
    assert free_places(rule_set, day, holders) == free


@pytest.mark.parametrize(
    ("day", "holders", "above", "free"),
    [
        (date(2025, 12, 31), 13_000, 0, 500),  # 2025: 13,500 places
        (date(2026, 1, 1), 13_000, 2_715, 0),  # 2026: 10,285 -> 2,715 above, nobody new
        (date(2026, 1, 1), 10_285, 0, 0),  # exactly at the quota: still nobody new
        (date(2026, 6, 1), 10_284, 0, 1),  # exits brought holders below: one place
    ],
)
def test_the_quota_falls_at_the_year_change(day: date, holders: int, above: int, free: int) -> None:
    rule_set = BOOK.in_force(FundingLine.PERWAKO_30_2025, day)
    assert rule_set is not None
    assert above_quota(rule_set, day, holders) == above
    assert free_places(rule_set, day, holders) == free


def test_window_check_names_the_next_funded_month() -> None:
    rule_set = BOOK.in_force(FundingLine.PERWAKO_30_2025, date(2025, 3, 1))
    assert rule_set is not None
    check = window_check(rule_set, date(2025, 3, 1))
    assert not check.passed and check.code == "OUTSIDE_FUNDING_WINDOW"
    assert "2025-06" in check.detail
    assert check.reason is not None and check.reason.params == {"next_month": "2025-06"}
    assert "berikutnya 2025-06" in check.reason.message
    assert "belum terlindungi" in check.reason.message
    assert window_check(rule_set, date(2025, 6, 1)).passed


def test_a_window_with_no_next_funded_month_still_explains_itself() -> None:
    rule_set = BOOK.in_force(FundingLine.PERWAKO_30_2025, date(2025, 3, 1))
    assert rule_set is not None
    unfunded = replace(rule_set, funding={})
    reason = window_check(unfunded, date(2025, 3, 1)).reason
    assert reason is not None and reason.params == {}
    assert "belum ada bulan didanai berikutnya" in reason.message


T0 = datetime(2026, 3, 2, 8, 0, tzinfo=BATAM_TZ)


def q(name: str, minutes: int, waiting: bool = False) -> InQueue[str]:
    return InQueue(name, T0 + timedelta(minutes=minutes), name, waiting)


@pytest.mark.parametrize(
    ("free", "queue", "promoted", "admitted", "waitlisted", "still"),
    [
        (3, [q("a", 1), q("b", 2)], [], ["a", "b"], [], []),
        (1, [q("b", 2), q("a", 1)], [], ["a"], ["b"], []),  # arrival order, not list order
        (0, [q("a", 1)], [], [], ["a"], []),
        (2, [q("w1", 0, True), q("w2", 1, True), q("n", 2)], ["w1", "w2"], [], ["n"], []),
        (1, [q("n", 5), q("w1", 0, True), q("w2", 1, True)], ["w1"], [], ["n"], ["w2"]),
        (2, [q("x", 1), q("y", 1)], [], ["x", "y"], [], []),  # same time: tiebreak
    ],
)
def test_allocate_oldest_first(
    free: int,
    queue: list[InQueue[str]],
    promoted: list[str],
    admitted: list[str],
    waitlisted: list[str],
    still: list[str],
) -> None:
    out = allocate(free, queue)
    assert (out.promoted, out.admitted, out.waitlisted, out.still_waiting) == (
        promoted,
        admitted,
        waitlisted,
        still,
    )


_ZONES = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (7, 0), (-5, 0), (5, 30))]


@settings(max_examples=300, deadline=None)
@given(
    free=st.integers(0, 12),
    people=st.lists(
        st.tuples(
            st.integers(0, 40),  # minutes after T0 (collisions test the tiebreak)
            st.sampled_from(_ZONES),  # the same instant written in other offsets
            st.sampled_from("abcdef"),
            st.booleans(),
        ),
        max_size=25,
    ),
)
def test_allocate_orders_by_the_instant_of_arrival_then_tiebreak(
    free: int, people: list[tuple[int, timezone, str, bool]]
) -> None:
    """The oldest first, the same instant in any offset (as aware times compare)."""
    queue = [
        InQueue(i, (T0 + timedelta(minutes=m)).astimezone(zone), name, waiting)
        for i, (m, zone, name, waiting) in enumerate(people)
    ]
    expected = sorted(queue, key=lambda x: (x.arrived_at, x.tiebreak))  # stable, as allocate
    placed = {x.item for x in expected[:free]}
    out = allocate(free, queue)
    assert out.promoted == [x.item for x in expected if x.waiting and x.item in placed]
    assert out.admitted == [x.item for x in expected if not x.waiting and x.item in placed]
    assert out.still_waiting == [x.item for x in expected if x.waiting and x.item not in placed]
    assert out.waitlisted == [x.item for x in expected if not x.waiting and x.item not in placed]


def test_allocate_refuses_naive_and_aware_times_together() -> None:
    with pytest.raises(TypeError):  # as comparing them does: no order between the two
        allocate(1, [q("a", 1), InQueue("b", datetime(2026, 3, 2, 8), "b", False)])


def test_allocate_orders_naive_times_among_themselves() -> None:
    naive = [InQueue(n, datetime(2026, 3, 2, 8, m), n, False) for n, m in (("b", 2), ("a", 1))]
    assert allocate(1, naive).admitted == ["a"]


@settings(max_examples=200, deadline=None)
@given(
    birth=st.dates(date(1940, 1, 1), date(2012, 12, 31)),
    day=st.dates(date(2025, 1, 1), date(2027, 12, 31)),
    member=st.booleans(),
    occupation=st.sampled_from(list(Occupation)),
    where=st.sampled_from(
        [("Sei Beduk", "Tanjung Piayu"), ("Batu Aji", "Belian"), (None, None), ("x", "y")]
    ),
)
def test_assess_twice_gives_equal_assessments(
    birth: date, day: date, member: bool, occupation: Occupation, where: tuple[str, str]
) -> None:
    """Checks kept for everyone who has the same values are the checks made for one."""
    a = applicant(
        birth_date=birth,
        existing_bpjs_tk=member,
        occupation=occupation,
        address=Address(kecamatan=where[0], kelurahan=where[1]),
    )
    first, again = assess(a, BOOK, day), assess(a, BOOK, day)
    assert first == again
    age_checks = [c for c in first.checks if c.rule == "AGE"]
    for c in age_checks:
        assert c.params["age"] == age_on(birth, day)
        assert c.passed == (c.params["min_age"] <= age_on(birth, day) < c.params["max_age"])
        assert f"usia {age_on(birth, day)} tahun pada {day.isoformat()}" in c.detail
