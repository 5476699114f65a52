"""Intake validation on plain values: one test per reason code, and the known traps."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.reasons import MESSAGES
from perlinsos_registry.testing import enrolment
from perlinsos_registry.validation import (
    ParticipantState,
    check_enrolment,
    check_exit,
    check_nik,
    decide_exit,
    duplicate_nik,
    normalise_phone,
)
from perlinsos_shared.events import ExitReason, ExitReported, Occupation, Reason

POLICY = AgencyPolicy.load()


def valid() -> dict[str, Any]:
    return enrolment(3, rid="DISHUB-2025-000001", existing_bpjs_tk=False)


def codes(data: dict[str, Any], source: str = "agency/DISHUB") -> list[str]:
    return [r.code for r in check_enrolment(data, source, POLICY).reasons]


def with_(**changes: Any) -> dict[str, Any]:
    data = valid()
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    return data


def test_valid_submission_is_accepted_and_normalised() -> None:
    checked = check_enrolment(valid(), "agency/DISHUB", POLICY)
    assert checked.reasons == []
    assert checked.phone_e164 == "+6281234567890"
    assert checked.submission is not None and checked.submission.nik == "2171101505900003"


# --- one test per reason code -----------------------------------------------------------

ENROLMENT_CASES: dict[str, Callable[[], list[str]]] = {
    "SCHEMA_INVALID": lambda: codes(with_(birth_date="15/05/1990")),
    "NIK_INVALID": lambda: codes(with_(nik="9971101505900003")),
    "BIRTH_DATE_MISMATCH": lambda: codes(with_(birth_date="1990-05-16")),
    "SEX_MISMATCH": lambda: codes(with_(sex="P")),
    "PHONE_INVALID": lambda: codes(with_(phone="0812345")),
    "PHONE_NOT_MOBILE": lambda: codes(with_(phone="(0778) 345678")),
    "ADDRESS_INCOMPLETE": lambda: codes(with_(address__rt="")),
    "EVIDENCE_MISSING": lambda: codes(with_(evidence={})),
    "AGENCY_NOT_ALLOWED": lambda: codes(
        with_(occupation="NELAYAN", evidence={"kusuka_number": "2171102500001"})
    ),
}


def _exit(**over: Any) -> ExitReported:
    base: dict[str, Any] = {
        "agency": "DISHUB",
        "request_id": "X-1",
        "nik": "2171101505900003",
        "reason": "ROLE_ENDED",
        "effective_date": "2025-12-31",
    }
    return ExitReported.model_validate({**base, **over})


ENROLLED = ParticipantState("p-1", Occupation.OJEK_DARING, date(2025, 10, 1))

OTHER_CASES: dict[str, Callable[[], list[Reason]]] = {
    "UNKNOWN_NIK": lambda: decide_exit(_exit(), None, POLICY),
    "EXIT_BEFORE_ENROLMENT": lambda: decide_exit(
        _exit(effective_date="2025-09-30"), ENROLLED, POLICY
    ),
    "ALREADY_EXITED": lambda: decide_exit(
        _exit(),
        ParticipantState("p-1", Occupation.OJEK_DARING, date(2025, 10, 1), date(2025, 11, 1)),
        POLICY,
    ),
}
# Decided over a whole batch, not per message: produced by running plans in
# test_intake_plan.py (`test_batch_reason_code`).
BATCH_CODES = {"DUPLICATE_NIK", "UNKNOWN_EVENT_TYPE", "SOURCE_UNVERIFIED"}


def test_every_reason_code_has_a_test() -> None:
    assert set(ENROLMENT_CASES) | set(OTHER_CASES) | BATCH_CODES == set(MESSAGES)


@pytest.mark.parametrize("code", sorted(ENROLMENT_CASES))
def test_enrolment_reason_code(code: str) -> None:
    assert ENROLMENT_CASES[code]() == [code]


@pytest.mark.parametrize("code", sorted(OTHER_CASES))
def test_state_reason_code(code: str) -> None:
    reasons = OTHER_CASES[code]()
    assert [r.code for r in reasons] == [code]
    assert all(r.message.startswith(MESSAGES[code]) for r in reasons)


def test_duplicate_names_the_first_agency() -> None:
    assert "KELURAHAN" in duplicate_nik("KELURAHAN").message


# --- every problem at once --------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_field() -> None:
    data = with_(
        nik="2171104505900003",  # a woman's NIK
        birth_date="1990-05-16",
        phone="0812abc4567",
        address={"kecamatan": " ", "kelurahan": "Belian", "rt": "3", "rw": "RW5"},
        evidence={"platform": "GOJEK"},
    )
    reasons = check_enrolment(data, "agency/DISHUB", POLICY).reasons
    assert [(r.code, r.field) for r in reasons] == [
        ("SEX_MISMATCH", "sex"),
        ("BIRTH_DATE_MISMATCH", "birth_date"),
        ("PHONE_INVALID", "phone"),
        ("ADDRESS_INCOMPLETE", "address.kecamatan"),
        ("ADDRESS_INCOMPLETE", "address.rw"),
        ("EVIDENCE_MISSING", "evidence.driver_id"),
    ]


def test_schema_problems_do_not_hide_the_others() -> None:
    data = with_(sex="X", phone="0778 345678")
    del data["full_name"]
    reasons = check_enrolment(data, "agency/DISHUB", POLICY).reasons
    assert [(r.code, r.field) for r in reasons] == [
        ("SCHEMA_INVALID", "full_name"),
        ("SCHEMA_INVALID", "sex"),
        ("PHONE_NOT_MOBILE", "phone"),
    ]
    assert "wajib diisi" in reasons[0].message


def test_source_must_agree_with_agency() -> None:
    reasons = check_enrolment(valid(), "agency/DISNAKER", POLICY).reasons
    assert [(r.code, r.field) for r in reasons] == [("SCHEMA_INVALID", "source")]


@pytest.mark.parametrize("payload", [None, [], "text", 42])
def test_data_that_is_not_an_object(payload: Any) -> None:
    assert codes(payload) == ["SCHEMA_INVALID"]  # type: ignore[arg-type]


def test_unknown_fields_are_ignored() -> None:
    assert codes({**valid(), "future_field": {"x": 1}}) == []


# --- NIK traps --------------------------------------------------------------------------


def test_women_carry_day_plus_forty() -> None:
    assert check_nik("2171105505900003", date(1990, 5, 15), "P") == []
    assert [r.code for r in check_nik("2171105505900003", date(1990, 5, 15), "L")] == [
        "SEX_MISMATCH"
    ]


def test_two_digit_year_is_compared_as_written_not_as_19xx() -> None:
    # stdnum reads 010105 as 1905; a person born in 2005 matches it.
    assert check_nik("2171100101050001", date(2005, 1, 1), "L") == []
    # 29 February 2000 exists only in 2000, not in 1900.
    assert check_nik("2171102902000001", date(2000, 2, 29), "L") == []
    assert [r.code for r in check_nik("2171100101050001", date(2005, 1, 2), "L")] == [
        "BIRTH_DATE_MISMATCH"
    ]


@pytest.mark.parametrize(
    "nik",
    [
        "217110150590000",  # 15 digits
        "21711015059000031",  # 17 digits
        "2171101505900000",  # serial 0000
        "2100101505900003",  # regency 00
        "2171001505900003",  # kecamatan 00
        "2171103205900003",  # day 32
        "2171101513900003",  # month 13
        "9971101505900003",  # no such province
        "21711015059000O3",  # a letter O
    ],
)
def test_malformed_niks(nik: str) -> None:
    assert [r.code for r in check_nik(nik, None, None)] == ["NIK_INVALID"]


@pytest.mark.parametrize("day", range(72, 100))
def test_nik_days_72_to_99_are_invalid_not_a_birth_date_mismatch(day: int) -> None:
    # python-stdnum reads the day as DD % 40: 81 would pass as the 1st, 72 as the 32nd
    nik = f"217110{day:02d}05900003"
    for birth_date, sex in ((None, None), (date(1990, 5, min(28, max(1, day % 40))), "P")):
        reasons = check_nik(nik, birth_date, sex)
        assert [r.code for r in reasons] == ["NIK_INVALID"], (day, reasons)
        assert "hari harus 01-31" in reasons[0].message


@pytest.mark.parametrize("day", [0, 32, 40])
def test_nik_days_between_the_ranges_are_invalid(day: int) -> None:
    assert [r.code for r in check_nik(f"217110{day:02d}05900003", None, None)] == ["NIK_INVALID"]


@pytest.mark.parametrize(("day", "sex"), [(1, "L"), (31, "L"), (41, "P"), (71, "P")])
def test_nik_day_bounds_are_accepted(day: int, sex: str) -> None:
    birth = date(1990, 5, day - 40 if sex == "P" else day)
    assert check_nik(f"217110{day:02d}05900003", birth, sex) == []


def test_nik_separators_are_tolerated_and_removed() -> None:
    checked = check_enrolment(with_(nik="2171 1015 0590 0003"), "agency/DISHUB", POLICY)
    assert checked.submission is not None and checked.submission.nik == "2171101505900003"


# --- phone traps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("081234567890", "+6281234567890"),
        ("0812-3456-7890", "+6281234567890"),
        ("+62 812 3456 7890", "+6281234567890"),
        ("62 812-3456-7890", "+6281234567890"),
        ("62811234567", "+62811234567"),  # bare 62 read as landline by libphonenumber
        ("0062811234567", "+62811234567"),
        ("(0812) 3456 7890", "+6281234567890"),
    ],
)
def test_phone_spellings_normalise_to_e164(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == (e164, None)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("0812abc4567", "PHONE_INVALID"),  # libphonenumber would read the letters as digits
        ("0812-345", "PHONE_INVALID"),
        ("", "PHONE_INVALID"),
        ("+", "PHONE_INVALID"),
        ("0812345678901234", "PHONE_INVALID"),
        ("0778 345678", "PHONE_NOT_MOBILE"),
        ("+1 650 253 0000", "PHONE_NOT_MOBILE"),
    ],
)
def test_phone_refusals(raw: str, code: str) -> None:
    e164, problem = normalise_phone(raw)
    assert e164 is None and problem is not None and problem.code == code


# --- agencies, evidence, exits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("agency", "occupation", "evidence", "allowed"),
    [
        ("DISNAKER", "NELAYAN", {"kusuka_number": "1"}, True),
        ("DISNAKER", "KETUA_RT", {"sk_number": "1"}, True),
        ("DISHUB", "BECAK", {"association": "Paguyuban"}, True),
        ("DISHUB", "KETUA_RT", {"sk_number": "1"}, False),
        ("PERIKANAN", "NELAYAN", {"kusuka_number": "1"}, True),
        ("PERIKANAN", "BOAT_PANCUNG", {"association": "P"}, False),
        ("KELURAHAN", "KADER_POSYANDU", {"sk_number": "1"}, True),
        ("KELURAHAN", "OJEK_DARING", {"association": "P"}, False),
        ("BAPPEDA", "KETUA_RT", {"sk_number": "1"}, False),
    ],
)
def test_agency_map_default(
    agency: str, occupation: str, evidence: dict[str, str], allowed: bool
) -> None:
    data = with_(agency=agency, occupation=occupation, evidence=evidence)
    assert codes(data, f"agency/{agency}") == ([] if allowed else ["AGENCY_NOT_ALLOWED"])


def test_agency_map_is_configurable() -> None:
    policy = AgencyPolicy.from_mapping({"DISHUB": ["BECAK"]})
    assert not check_enrolment(valid(), "agency/DISHUB", policy).accepted


@pytest.mark.parametrize(
    ("occupation", "evidence", "ok"),
    [
        ("KETUA_RW", {"sk_number": "800/1/SK/2025"}, True),
        ("KETUA_RW", {"sk_number": "  "}, False),
        ("NELAYAN", {"kusuka_number": "2171"}, True),
        ("NELAYAN", {"sk_number": "1"}, False),
        ("BOAT_PANCUNG", {"association": "Paguyuban"}, True),
        ("OJEK_DARING", {"platform": "GRAB", "driver_id": "G-1"}, True),
        ("OJEK_DARING", {"driver_id": "G-1"}, False),
    ],
)
def test_evidence_per_occupation(occupation: str, evidence: dict[str, str], ok: bool) -> None:
    data = with_(agency="DISNAKER", occupation=occupation, evidence=evidence)
    assert codes(data, "agency/DISNAKER") == ([] if ok else ["EVIDENCE_MISSING"])


def test_exit_payload_and_decision() -> None:
    checked = check_exit(
        {
            "agency": "DISHUB",
            "request_id": "X",
            "nik": "2171101505900003",
            "reason": "DECEASED",
            "effective_date": "2025-12-01",
        },
        "agency/DISHUB",
        POLICY,
    )
    assert checked.exit is not None and checked.exit.reason == ExitReason.DECEASED
    assert decide_exit(checked.exit, ENROLLED, POLICY) == []
    bad = check_exit({"agency": "DISHUB", "reason": "BORED"}, "agency/DISHUB", POLICY)
    assert {r.field for r in bad.reasons} == {"request_id", "nik", "reason", "effective_date"}
    fishery = decide_exit(_exit(agency="PERIKANAN"), ENROLLED, POLICY)
    assert [r.code for r in fishery] == ["AGENCY_NOT_ALLOWED"]


# --- never raises -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(field=st.sampled_from(sorted(valid())), value=json_values)
def test_any_single_field_mutation_gives_a_verdict(field: str, value: Any) -> None:
    data = copy.deepcopy(valid())
    data[field] = value
    checked = check_enrolment(data, "agency/DISHUB", POLICY)
    assert checked.accepted == (checked.submission is not None)
    assert all(r.code in MESSAGES for r in checked.reasons)
