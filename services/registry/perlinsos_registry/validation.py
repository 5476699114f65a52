"""Validation of one enrolment submission: every problem at once, as reason codes.

Pure: plain values in, plain values out. Uses python-stdnum for the NIK and
phonenumbers for the phone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import phonenumbers
from phonenumbers import PhoneNumberType
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.id import nik as stdnum_nik

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.reasons import reason
from perlinsos_shared.events import EnrolmentSubmitted, Occupation, Reason

COMMUNITY_ROLES = frozenset(
    {
        Occupation.KETUA_RT,
        Occupation.KETUA_RW,
        Occupation.KADER_POSYANDU,
        Occupation.KADER_SIAGA,
        Occupation.KETUA_LPM,
    }
)
TRANSPORT = frozenset({Occupation.OJEK_DARING, Occupation.BECAK, Occupation.BOAT_PANCUNG})
_RT_RW = re.compile(r"^\d{1,3}$")


@dataclass(frozen=True)
class Checked:
    """A submission's outcome: reasons (empty when accepted) and the normalised phone."""

    reasons: list[Reason]
    phone_e164: str | None


def nik_date_part(birth_date: date, sex: str) -> str:
    day = birth_date.day + (40 if sex == "P" else 0)
    return f"{day:02d}{birth_date.month:02d}{birth_date.year % 100:02d}"


def check_nik(nik: str, birth_date: date, sex: str) -> list[Reason]:
    try:
        compact = stdnum_nik.validate(nik)
    except StdnumError:
        return [reason("NIK_INVALID", "nik")]
    if compact != nik:
        return [reason("NIK_INVALID", "nik", "hanya 16 digit angka tanpa pemisah")]
    out: list[Reason] = []
    day_code = int(nik[6:8])
    nik_sex = "P" if day_code > 40 else "L"
    if nik_sex != sex:
        out.append(reason("SEX_MISMATCH", "sex"))
    expected = nik_date_part(birth_date, nik_sex)
    if nik[6:12] != expected:
        out.append(reason("BIRTH_DATE_MISMATCH", "birth_date"))
    return out


def normalise_phone(raw: str) -> tuple[str | None, Reason | None]:
    try:
        number = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException:
        return None, reason("PHONE_INVALID", "phone")
    if not phonenumbers.is_valid_number(number) or number.country_code != 62:
        return None, reason("PHONE_INVALID", "phone")
    if phonenumbers.number_type(number) != PhoneNumberType.MOBILE:
        return None, reason("PHONE_NOT_MOBILE", "phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def check_address(sub: EnrolmentSubmitted) -> list[Reason]:
    a = sub.address
    missing = [
        name
        for name, value in (("kecamatan", a.kecamatan), ("kelurahan", a.kelurahan))
        if not (value and value.strip())
    ]
    missing += [
        name
        for name, value in (("rt", a.rt), ("rw", a.rw))
        if not (value and _RT_RW.match(value.strip()))
    ]
    return [reason("ADDRESS_INCOMPLETE", f"address.{m}") for m in missing]


def check_evidence(sub: EnrolmentSubmitted) -> list[Reason]:
    e = sub.evidence
    occ = sub.occupation
    if occ in COMMUNITY_ROLES and not (e.sk_number and e.sk_number.strip()):
        return [reason("EVIDENCE_MISSING", "evidence.sk_number", "nomor SK lurah/camat")]
    if occ == Occupation.NELAYAN and not (e.kusuka_number and e.kusuka_number.strip()):
        return [reason("EVIDENCE_MISSING", "evidence.kusuka_number", "nomor kartu KUSUKA")]
    if occ in TRANSPORT:
        has_platform = bool(
            e.platform and e.platform.strip() and e.driver_id and e.driver_id.strip()
        )
        has_association = bool(e.association and e.association.strip())
        if not (has_platform or has_association):
            return [
                reason(
                    "EVIDENCE_MISSING",
                    "evidence",
                    "platform dan ID pengemudi, atau paguyuban/asosiasi",
                )
            ]
    return []


def check_submission(sub: EnrolmentSubmitted, source: str, policy: AgencyPolicy) -> Checked:
    reasons: list[Reason] = []
    if source != f"agency/{sub.agency}":
        reasons.append(reason("SOURCE_MISMATCH", "source", f"diharapkan agency/{sub.agency}"))
    if not policy.allows(sub.agency, sub.occupation):
        reasons.append(reason("AGENCY_NOT_ALLOWED", "occupation"))
    reasons += check_nik(sub.nik, sub.birth_date, sub.sex)
    phone, phone_problem = normalise_phone(sub.phone)
    if phone_problem:
        reasons.append(phone_problem)
    reasons += check_address(sub)
    reasons += check_evidence(sub)
    return Checked(reasons=reasons, phone_e164=phone)
