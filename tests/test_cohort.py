from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import phonenumbers
import pytest
from stdnum.id import nik as stdnum_nik

from perlinsos_devruntime.cohort import (
    AGENCY_BY_OCCUPATION,
    COMMUNITY_ROLES,
    FAULT_KINDS,
    FUNDING_LINE_BY_OCCUPATION,
    Submission,
    generate_cohort,
    line_mix,
)
from perlinsos_shared.clock import today_local
from perlinsos_shared.wilayah import is_batam_address

LAUNCH = date(2025, 9, 26)
PHONE_CHARS = set("0123456789+-() ")
MOBILE_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}
DATA_FIELDS = {
    "agency",
    "request_id",
    "nik",
    "full_name",
    "birth_date",
    "sex",
    "phone",
    "address",
    "occupation",
    "evidence",
    "existing_bpjs_tk",
}


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def nik_birth(nik: str) -> tuple[int, int, int, str]:
    """(day, month, two-digit year, sex) as the NIK encodes them."""
    day = int(nik[6:8])
    return day % 40, int(nik[8:10]), int(nik[10:12]), "P" if day > 40 else "L"


def evidence_ok(occupation: str, evidence: dict[str, Any]) -> bool:
    if occupation in COMMUNITY_ROLES:
        return bool(evidence.get("sk_number"))
    if occupation == "NELAYAN":
        return str(evidence.get("kusuka_number", "")).isdigit()
    if occupation == "OJEK_DARING":
        return evidence.get("platform") in {"GOJEK", "GRAB", "MAXIM"} and bool(
            evidence.get("driver_id")
        )
    return bool(evidence.get("association"))


def failed_checks(data: dict[str, Any], today: date) -> set[str]:
    """The checks (named like the fault kinds) one submission fails on its own."""
    failed: set[str] = set()
    nik: str = data["nik"]
    born = date.fromisoformat(data["birth_date"])
    if not stdnum_nik.is_valid(nik):
        failed.add("NIK_INVALID")
    else:
        day, month, yy, sex = nik_birth(nik)
        if (day, month, yy) != (born.day, born.month, born.year % 100):
            failed.add("BIRTH_DATE_MISMATCH")
        if sex != data["sex"]:
            failed.add("SEX_MISMATCH")
    phone: str = data["phone"]
    try:
        parsed = phonenumbers.parse(phone, "ID")
        phone_ok = set(phone) <= PHONE_CHARS and phonenumbers.is_valid_number(parsed)
    except phonenumbers.NumberParseException:
        phone_ok = False
    if not phone_ok:
        failed.add("PHONE_INVALID")
    elif phonenumbers.number_type(parsed) not in MOBILE_TYPES:
        failed.add("PHONE_NOT_MOBILE")
    address = data["address"]
    if not all(str(address.get(k, "")).strip() for k in ("kecamatan", "kelurahan", "rt", "rw")):
        failed.add("ADDRESS_INCOMPLETE")
    elif not is_batam_address(address["kecamatan"], address["kelurahan"]):
        failed.add("DOMICILE_NOT_BATAM")
    if not evidence_ok(data["occupation"], data["evidence"]):
        failed.add("EVIDENCE_MISSING")
    if data["existing_bpjs_tk"]:
        failed.add("ALREADY_BPJS_MEMBER")
    if not years_before(today, 65) < born <= years_before(today, 18):
        failed.add("AGE_OUT_OF_RANGE")
    return failed


@pytest.fixture(scope="module")
def cohort() -> list[Submission]:
    return generate_cohort(24_300, seed=2025, fault_rate=0.03, today=LAUNCH)


def test_shape_of_every_submission(cohort: list[Submission]) -> None:
    assert len(cohort) == 24_300
    for sub in cohort:
        data = sub.data
        assert set(data) == DATA_FIELDS
        assert data["agency"] == sub.agency and data["request_id"] == sub.request_id
        assert sub.request_id.startswith(f"{sub.agency}-2025-")
        assert data["sex"] in {"L", "P"}
        assert data["occupation"] in FUNDING_LINE_BY_OCCUPATION
        assert set(data["address"]) == {"kecamatan", "kelurahan", "rt", "rw", "street"}
        assert isinstance(data["existing_bpjs_tk"], bool)
        assert len(data["full_name"].split()) >= 2
        if sub.fault != "ADDRESS_INCOMPLETE":
            assert len(data["address"]["rt"]) == 3 and data["address"]["rt"].isdigit()
        assert len(data["address"]["rw"]) == 3 and data["address"]["rw"].isdigit()
        assert data["address"]["street"]


def test_non_faulty_pass_every_check(cohort: list[Submission]) -> None:
    clean = [s for s in cohort if s.fault is None]
    assert len(clean) == 24_300 - 729
    for sub in clean:
        assert failed_checks(sub.data, LAUNCH) == set(), sub.data
        assert sub.data["existing_bpjs_tk"] is False


def test_non_faulty_nik_agrees_with_birth_date_and_sex(cohort: list[Submission]) -> None:
    for sub in cohort:
        if sub.fault is not None:
            continue
        nik = sub.data["nik"]
        assert len(nik) == 16 and nik.isdigit()
        assert stdnum_nik.validate(nik) == nik
        born = date.fromisoformat(sub.data["birth_date"])
        expected_day = born.day + (40 if sub.data["sex"] == "P" else 0)
        assert nik[6:12] == f"{expected_day:02d}{born.month:02d}{born.year % 100:02d}"
        assert 1 <= int(nik[12:]) <= 9999


def test_each_fault_fails_exactly_its_own_check(cohort: list[Submission]) -> None:
    for sub in cohort:
        if sub.fault is None or sub.fault == "DUPLICATE_NIK":
            continue
        assert failed_checks(sub.data, LAUNCH) == {sub.fault}, (sub.fault, sub.data)


def test_niks_unique_except_duplicate_faults(cohort: list[Submission]) -> None:
    first_seen: dict[str, Submission] = {}
    for sub in cohort:
        nik = sub.data["nik"]
        if sub.fault == "DUPLICATE_NIK":
            original = first_seen[nik]  # the NIK came earlier in the cohort
            assert original.fault is None
            assert original.agency != sub.agency
            assert original.request_id != sub.request_id
            assert failed_checks(sub.data, LAUNCH) == set()
            for key in ("full_name", "birth_date", "sex"):
                assert sub.data[key] == original.data[key]
        else:
            assert nik not in first_seen, nik
            first_seen[nik] = sub


def test_request_ids_unique_per_agency(cohort: list[Submission]) -> None:
    keys = [(s.agency, s.request_id) for s in cohort]
    assert len(set(keys)) == len(keys)


def test_line_mix_for_launch_size(cohort: list[Submission]) -> None:
    lines = Counter(FUNDING_LINE_BY_OCCUPATION[s.data["occupation"]] for s in cohort)
    assert lines == {"PERWAKO-49-2025": 12_000, "PERWAKO-30-2025": 7_600, "PERWAKO-3-2023": 4_700}
    occupations = Counter(s.data["occupation"] for s in cohort)
    assert occupations["BOAT_PANCUNG"] == 152 and occupations["BECAK"] == 76
    assert occupations["OJEK_DARING"] == 7_372
    assert sum(occupations[o] for o in COMMUNITY_ROLES) == 12_000
    assert line_mix(24_300) == dict(occupations)


@pytest.mark.parametrize("size", [1, 2, 3, 10, 100, 999])
def test_line_mix_scales(size: int) -> None:
    mix = line_mix(size)
    assert sum(mix.values()) == size
    lines: Counter[str] = Counter()
    for occupation, n in mix.items():
        lines[FUNDING_LINE_BY_OCCUPATION[occupation]] += n
    for line, share in (
        ("PERWAKO-49-2025", 12_000),
        ("PERWAKO-30-2025", 7_600),
        ("PERWAKO-3-2023", 4_700),
    ):
        assert abs(lines[line] - size * share / 24_300) < 1


def test_agencies(cohort: list[Submission]) -> None:
    agencies = Counter(s.agency for s in cohort)
    assert 0.09 < agencies["DISNAKER"] / len(cohort) < 0.11
    for sub in cohort:
        assert sub.agency in {AGENCY_BY_OCCUPATION[sub.data["occupation"]], "DISNAKER"}


def test_every_fault_kind_appears(cohort: list[Submission]) -> None:
    faults = Counter(s.fault for s in cohort if s.fault)
    assert set(faults) == set(FAULT_KINDS)
    assert sum(faults.values()) == 729
    assert min(faults.values()) >= 60


def test_nik_regions(cohort: list[Submission]) -> None:
    clean = [s for s in cohort if s.fault is None]
    outside = sum(not s.data["nik"].startswith("2171") for s in clean) / len(clean)
    assert 0.07 < outside < 0.13
    batam_codes = {f"2171{i:02d}" for i in range(1, 13)}
    for sub in clean:
        nik = sub.data["nik"]
        assert not nik.startswith("2171") or nik[:6] in batam_codes


def test_ages_and_boundary(cohort: list[Submission]) -> None:
    clean = [date.fromisoformat(s.data["birth_date"]) for s in cohort if s.fault is None]
    limit = years_before(LAUNCH, 65)
    assert all(born > limit + timedelta(days=31) for born in clean)
    assert any(born < years_before(LAUNCH, 64) for born in clean)  # some aged 64
    old = [
        date.fromisoformat(s.data["birth_date"]) for s in cohort if s.fault == "AGE_OUT_OF_RANGE"
    ]
    assert all(years_before(LAUNCH, 67) < born <= limit for born in old)


def test_phone_spellings_vary(cohort: list[Submission]) -> None:
    phones = [s.data["phone"] for s in cohort if s.fault is None]
    assert any(p.startswith("08") for p in phones)
    assert any(p.startswith("+628") for p in phones)
    assert any(p.startswith("62 8") and "-" in p for p in phones)
    for phone in phones:
        digits = "".join(ch for ch in phone if ch.isdigit())
        local = "0" + digits[2:] if digits.startswith("62") else digits
        assert 10 <= len(local) <= 13


def test_deterministic_for_a_seed() -> None:
    first = generate_cohort(2_000, seed=7, today=LAUNCH)
    again = generate_cohort(2_000, seed=7, today=LAUNCH)
    other = generate_cohort(2_000, seed=8, today=LAUNCH)
    assert first == again
    assert [s.data for s in first] != [s.data for s in other]


@pytest.mark.parametrize("size", [1, 2, 10, 37])
def test_small_sizes(size: int) -> None:
    cohort = generate_cohort(size, today=LAUNCH)
    assert len(cohort) == size
    for sub in cohort:
        if sub.fault is None:
            assert failed_checks(sub.data, LAUNCH) == set()


def test_all_faulty_small_cohort_still_well_formed() -> None:
    cohort = generate_cohort(11, seed=3, fault_rate=1.0, today=LAUNCH)
    assert all(s.fault is not None for s in cohort)
    for sub in cohort:  # nobody to duplicate, so DUPLICATE_NIK becomes NIK_INVALID
        assert failed_checks(sub.data, LAUNCH) == {sub.fault}


def test_leap_day_today() -> None:
    today = date(2028, 2, 29)
    for sub in generate_cohort(3_000, seed=11, today=today):
        if sub.fault is None:
            assert failed_checks(sub.data, today) == set()


def test_default_today_is_batam_today() -> None:
    """Without `today`, the cohort is the one for Batam's date (Asia/Jakarta), not the
    machine's: the same people as with `today=today_local()`, other people a day off."""
    batam = today_local()
    default = generate_cohort(200, seed=5)
    if today_local() != batam:  # midnight in Batam passed in between: take the new day
        batam, default = today_local(), generate_cohort(200, seed=5)
    assert default == generate_cohort(200, seed=5, today=batam)
    assert default != generate_cohort(200, seed=5, today=batam - timedelta(days=1))


@pytest.mark.parametrize(("size", "rate"), [(0, 0.03), (10, -0.1), (10, 1.5)])
def test_rejects_bad_arguments(size: int, rate: float) -> None:
    with pytest.raises(ValueError):
        generate_cohort(size, fault_rate=rate)
