"""Validation of intake: every problem of a submission at once, as reason codes.

Pure: plain values in, plain values out (no I/O). python-stdnum checks the NIK's
structure and province, phonenumbers parses the phone. Two known traps are handled here:

- `stdnum.id.nik` reads the two-digit year as 19xx first and checks only the province,
  so the birth date is compared as DDMMYY text (day + 40 for women), never through the
  date stdnum extracts, and regency, kecamatan and serial are checked here;
- it also reads the day as ``DD % 40``, so a day of 72-99 passes as 32-59 or a real
  day; a NIK's day is 01-31 (men) or 41-71 (women), and anything else is refused here;
- phonenumbers accepts letters (``0812abc4567`` parses as valid) and reads a bare
  ``62811234567`` as a landline number, so letters are refused first and a leading
  ``62`` followed by ``8`` is taken as the country code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.id import nik as stdnum_nik

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.reasons import reason
from perlinsos_shared.events import EnrolmentSubmitted, ExitReported, Occupation, Reason
from perlinsos_shared.phones import classify_phone, is_well_formed

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
AGENCY_SOURCE_PREFIX = "agency/"

_RT_RW = re.compile(r"^\d{1,3}$")
_NIK_SEPARATORS = re.compile(r"[\s.\-]")


# --- schema -----------------------------------------------------------------------------

_SCHEMA_DETAIL: dict[str, str] = {
    "missing": "wajib diisi",
    "string_type": "harus berupa teks",
    "string_too_short": "tidak boleh kosong",
    "date_type": "harus tanggal ISO 8601 (YYYY-MM-DD)",
    "date_parsing": "harus tanggal ISO 8601 (YYYY-MM-DD)",
    "date_from_datetime_parsing": "harus tanggal ISO 8601 (YYYY-MM-DD)",
    "date_from_datetime_inexact": "harus tanggal tanpa jam (YYYY-MM-DD)",
    "literal_error": "nilai tidak dikenal",
    "enum": "nilai tidak dikenal",
    "bool_type": "harus true atau false",
    "bool_parsing": "harus true atau false",
    "model_type": "harus berupa objek",
    "model_attributes_type": "harus berupa objek",
    "dict_type": "harus berupa objek",
}


def _schema_reason(err: ErrorDetails, prefix: tuple[str | int, ...] = ()) -> Reason:
    loc = prefix + tuple(err["loc"])
    field = ".".join(str(p) for p in loc) or None
    detail = _SCHEMA_DETAIL.get(err["type"], "nilai tidak sesuai")
    if err["type"] in ("literal_error", "enum"):
        expected = (err.get("ctx") or {}).get("expected")
        if expected:
            detail = f"{detail}; pilihan: {str(expected).replace(' or ', ' atau ')}"
    return reason("SCHEMA_INVALID", field, detail)


def schema_reasons(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[Reason]:
    """Pydantic errors as `SCHEMA_INVALID` reasons with Indonesian messages (at most 20)."""
    return [_schema_reason(e, prefix) for e in exc.errors()[:20]]


def _field_adapters(model: type[Any]) -> dict[str, tuple[TypeAdapter[Any], bool, Any]]:
    out: dict[str, tuple[TypeAdapter[Any], bool, Any]] = {}
    for name, info in model.model_fields.items():
        annotated: Any = (
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        )
        default = info.get_default(call_default_factory=True) if not info.is_required() else None
        out[name] = (TypeAdapter(annotated), info.is_required(), default)
    return out


_ENROLMENT_FIELDS = _field_adapters(EnrolmentSubmitted)
_EXIT_FIELDS = _field_adapters(ExitReported)


def _parse_fields(
    data: Any, fields: dict[str, tuple[TypeAdapter[Any], bool, Any]]
) -> tuple[dict[str, Any], list[Reason]]:
    """Each field on its own, so one bad field does not hide the problems of the others."""
    if not isinstance(data, dict):
        return {}, [reason("SCHEMA_INVALID", "data", "harus berupa objek JSON")]
    values: dict[str, Any] = {}
    problems: list[Reason] = []
    for name, (adapter, required, default) in fields.items():
        if name not in data or data[name] is None:
            if required:
                problems.append(reason("SCHEMA_INVALID", name, "wajib diisi"))
            else:
                values[name] = default
            continue
        try:
            values[name] = adapter.validate_python(data[name])
        except ValidationError as exc:
            problems += schema_reasons(exc, (name,))
    return values, problems


def identity(data: Any) -> tuple[str | None, str | None, str | None]:
    """(agency, request_id, nik) as far as they can be read from an untrusted payload."""
    if not isinstance(data, dict):
        return None, None, None
    a, r, n = data.get("agency"), data.get("request_id"), data.get("nik")
    return (
        a if isinstance(a, str) and a.strip() else None,
        r if isinstance(r, str) and r.strip() else None,
        n if isinstance(n, str) else None,
    )


def agency_of_source(source: str | None) -> str | None:
    if source and source.startswith(AGENCY_SOURCE_PREFIX):
        return source.removeprefix(AGENCY_SOURCE_PREFIX) or None
    return None


def check_source(source: str, agency: str) -> list[Reason]:
    if source != f"{AGENCY_SOURCE_PREFIX}{agency}":
        return [
            reason(
                "SCHEMA_INVALID",
                "source",
                f"source harus {AGENCY_SOURCE_PREFIX}{agency} (sama dengan kolom agency)",
            )
        ]
    return []


# --- NIK --------------------------------------------------------------------------------


def normalise_nik(raw: str) -> str:
    """The NIK without the separators people type (spaces, dots, dashes)."""
    return _NIK_SEPARATORS.sub("", raw)


def nik_sex(nik: str) -> str:
    """`P` when the NIK's day is 41-71 (women carry day + 40), else `L`."""
    return "P" if int(nik[6:8]) > 40 else "L"


def nik_date_part(birth_date: date, sex: str) -> str:
    """The DDMMYY a NIK carries for this birth date and sex."""
    day = birth_date.day + (40 if sex == "P" else 0)
    return f"{day:02d}{birth_date.month:02d}{birth_date.year % 100:02d}"


@lru_cache(maxsize=1024)
def _province_known(region: str) -> bool:
    """python-stdnum's region check (it knows provinces only), cached per 4-digit region."""
    try:
        stdnum_nik.validate(f"{region}010101900001")
    except StdnumError:
        return False
    return True


def _nik_day_possible(day: int) -> bool:
    """01-31 for men, 41-71 for women (day + 40); stdnum alone would take 72-99 too."""
    return 1 <= day <= 31 or 41 <= day <= 71


@lru_cache(maxsize=65536)
def _nik_date_valid(ddmmyy: str) -> bool:
    """Whether DDMMYY (day + 40 for women) is a date in some century, per python-stdnum."""
    try:
        stdnum_nik.get_birth_date(f"217101{ddmmyy}0001")
    except (StdnumError, ValueError):
        return False
    return True


def nik_structure_problem(nik: str) -> str | None:
    """Why this (normalised) NIK is not well formed, in Indonesian; None when it is."""
    if not nik.isascii() or not nik.isdigit():
        return "hanya boleh berisi angka"
    if len(nik) != 16:
        return f"harus 16 digit, bukan {len(nik)}"
    if not _province_known(nik[:4]):
        return "kode provinsi dalam NIK tidak sah"
    if not _nik_day_possible(int(nik[6:8])):
        return "tanggal lahir dalam NIK tidak sah (hari harus 01-31, atau 41-71 untuk perempuan)"
    if not _nik_date_valid(nik[6:12]):
        return "tanggal lahir dalam NIK tidak sah"
    if nik[2:4] == "00":
        return "kode kabupaten/kota tidak sah"
    if nik[4:6] == "00":
        return "kode kecamatan tidak sah"
    if nik[12:16] == "0000":
        return "nomor urut tidak sah"
    return None


def check_nik(nik: str, birth_date: date | None, sex: str | None) -> list[Reason]:
    """Structure, then birth date and sex against the NIK (each compared only if given)."""
    problem = nik_structure_problem(nik)
    if problem:
        return [reason("NIK_INVALID", "nik", problem)]
    out: list[Reason] = []
    encoded_sex = nik_sex(nik)
    if sex is not None and sex != encoded_sex:
        out.append(reason("SEX_MISMATCH", "sex", f"NIK menunjukkan {encoded_sex}"))
    # Compared as DDMMYY text with the NIK's own sex: a wrong sex is reported once, as
    # SEX_MISMATCH, not again as a birth date one.
    if birth_date is not None and nik[6:12] != nik_date_part(birth_date, encoded_sex):
        out.append(reason("BIRTH_DATE_MISMATCH", "birth_date"))
    return out


# --- phone ------------------------------------------------------------------------------


def normalise_phone(raw: str) -> tuple[str | None, Reason | None]:
    """An Indonesian mobile number in E.164, or why not."""
    check = classify_phone(raw)
    if check.kind == "mobile":
        return check.e164, None
    if check.kind == "foreign":
        return None, reason("PHONE_NOT_MOBILE", "phone", "bukan nomor Indonesia (+62)")
    if check.kind == "not_mobile":
        return None, reason("PHONE_NOT_MOBILE", "phone")
    if is_well_formed(raw):
        return None, reason("PHONE_INVALID", "phone")
    return None, reason("PHONE_INVALID", "phone", "hanya angka, spasi, tanda - dan + awal")


# --- address and evidence ---------------------------------------------------------------


def _blank(value: str | None) -> bool:
    return not (value and value.strip())


def check_address(
    kecamatan: str | None, kelurahan: str | None, rt: str | None, rw: str | None
) -> list[Reason]:
    """Kecamatan and kelurahan present; RT and RW 1-3 digits, not zero.

    Whether the address lies in Kota Batam is a regulation criterion: eligibility's.
    """
    out: list[Reason] = []
    for name, value in (("kecamatan", kecamatan), ("kelurahan", kelurahan)):
        if _blank(value):
            out.append(reason("ADDRESS_INCOMPLETE", f"address.{name}", f"{name} wajib diisi"))
    for name, value in (("rt", rt), ("rw", rw)):
        text = (value or "").strip()
        if not text:
            out.append(
                reason("ADDRESS_INCOMPLETE", f"address.{name}", f"{name.upper()} wajib diisi")
            )
        elif not _RT_RW.match(text) or int(text) == 0:
            out.append(
                reason(
                    "ADDRESS_INCOMPLETE",
                    f"address.{name}",
                    f"{name.upper()} harus 1-3 digit angka, misalnya 003",
                )
            )
    return out


def check_evidence(
    occupation: Occupation,
    sk_number: str | None = None,
    kusuka_number: str | None = None,
    platform: str | None = None,
    driver_id: str | None = None,
    association: str | None = None,
) -> list[Reason]:
    """The proof each occupation needs: SK, KUSUKA, or platform + driver id / association."""
    if occupation in COMMUNITY_ROLES and _blank(sk_number):
        return [reason("EVIDENCE_MISSING", "evidence.sk_number", "nomor SK lurah/camat")]
    if occupation == Occupation.NELAYAN and _blank(kusuka_number):
        return [reason("EVIDENCE_MISSING", "evidence.kusuka_number", "nomor kartu KUSUKA")]
    if occupation in TRANSPORT and _blank(association):
        if _blank(platform) and _blank(driver_id):
            return [
                reason(
                    "EVIDENCE_MISSING",
                    "evidence",
                    "platform dan ID pengemudi, atau paguyuban/asosiasi",
                )
            ]
        if _blank(driver_id):
            return [reason("EVIDENCE_MISSING", "evidence.driver_id", "ID pengemudi")]
        if _blank(platform):
            return [reason("EVIDENCE_MISSING", "evidence.platform", "nama platform")]
    return []


def check_agency(policy: AgencyPolicy, agency: str, occupation: Occupation) -> list[Reason]:
    if not policy.is_known(agency):
        return [reason("AGENCY_NOT_ALLOWED", "agency", f"instansi {agency} tidak dikenal")]
    if not policy.allows(agency, occupation):
        return [
            reason("AGENCY_NOT_ALLOWED", "occupation", f"{agency} tidak boleh {occupation.value}")
        ]
    return []


# --- one enrolment ----------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """A submission's outcome: reasons (empty when accepted) and, when accepted, the
    normalised submission (compact NIK) and phone in E.164."""

    reasons: list[Reason]
    submission: EnrolmentSubmitted | None = None
    phone_e164: str | None = None

    @property
    def accepted(self) -> bool:
        return not self.reasons


def check_enrolment(data: Any, source: str, policy: AgencyPolicy) -> Checked:
    """Every problem of one `perlinsos.enrolment.submitted.v1` data object, at once."""
    values, reasons = _parse_fields(data, _ENROLMENT_FIELDS)
    agency: str | None = values.get("agency")
    occupation: Occupation | None = values.get("occupation")
    if agency is not None:
        reasons += check_source(source, agency)
        if occupation is not None:
            reasons += check_agency(policy, agency, occupation)
    nik = values.get("nik")
    if nik is not None:
        nik = normalise_nik(nik)
        reasons += check_nik(nik, values.get("birth_date"), values.get("sex"))
    phone: str | None = None
    if values.get("phone") is not None:
        phone, phone_problem = normalise_phone(values["phone"])
        if phone_problem:
            reasons.append(phone_problem)
    address = values.get("address")
    if address is not None:
        reasons += check_address(address.kecamatan, address.kelurahan, address.rt, address.rw)
    evidence = values.get("evidence")
    if occupation is not None and evidence is not None:
        reasons += check_evidence(
            occupation,
            evidence.sk_number,
            evidence.kusuka_number,
            evidence.platform,
            evidence.driver_id,
            evidence.association,
        )
    if reasons:
        return Checked(reasons)
    submission = EnrolmentSubmitted.model_validate({**values, "nik": nik})
    return Checked([], submission, phone)


# --- exits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExitChecked:
    reasons: list[Reason]
    exit: ExitReported | None = None


def check_exit(data: Any, source: str, policy: AgencyPolicy) -> ExitChecked:
    """The payload of one `perlinsos.enrolment.exit-reported.v1`, before the state is read."""
    values, reasons = _parse_fields(data, _EXIT_FIELDS)
    agency: str | None = values.get("agency")
    if agency is not None:
        reasons += check_source(source, agency)
        if not policy.is_known(agency):
            reasons.append(
                reason("AGENCY_NOT_ALLOWED", "agency", f"instansi {agency} tidak dikenal")
            )
    if reasons:
        return ExitChecked(reasons)
    values["nik"] = normalise_nik(values["nik"])
    return ExitChecked([], ExitReported.model_validate(values))


@dataclass(frozen=True)
class ParticipantState:
    """What an exit is decided against: the participant as registry holds it."""

    participant_id: str
    occupation: Occupation
    enrolled_on: date  # Batam date of enrolment
    exited_on: date | None = None


def decide_exit(
    ex: ExitReported, participant: ParticipantState | None, policy: AgencyPolicy
) -> list[Reason]:
    """Why this exit cannot be applied to this participant (empty: apply it)."""
    if participant is None:
        return [reason("UNKNOWN_NIK", "nik")]
    out: list[Reason] = []
    if not policy.allows(ex.agency, participant.occupation):
        out.append(
            reason(
                "AGENCY_NOT_ALLOWED",
                "agency",
                f"{ex.agency} tidak berwenang atas peserta {participant.occupation.value}",
            )
        )
    if participant.exited_on is not None:
        out.append(
            reason("ALREADY_EXITED", "nik", f"keluar sejak {participant.exited_on.isoformat()}")
        )
    elif ex.effective_date < participant.enrolled_on:
        out.append(
            reason(
                "EXIT_BEFORE_ENROLMENT",
                "effective_date",
                f"terdaftar sejak {participant.enrolled_on.isoformat()}",
            )
        )
    return out


def unknown_event_type(event_type: str) -> Reason:
    """A type that does not belong on `registry.intake.v1`."""
    return reason("UNKNOWN_EVENT_TYPE", "type", event_type[:100])


def duplicate_nik(first_agency: str) -> Reason:
    """`DUPLICATE_NIK`, naming the agency that enrolled the person first (one person, one
    funding line: the second enrolment is refused whichever agency sends it)."""
    return reason("DUPLICATE_NIK", "nik", f"didaftarkan pertama oleh {first_agency}")
