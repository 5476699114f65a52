"""Masking personal data before it goes anywhere it does not belong (logs, spans, screens)."""

from __future__ import annotations

import hashlib
from typing import Any


def mask_nik(nik: str) -> str:
    """First 6 and last 2 digits shown, as in `registry.intake-rejected.v1`."""
    if len(nik) <= 8:
        return "*" * len(nik)
    return nik[:6] + "*" * (len(nik) - 8) + nik[-2:]


def mask_phone(phone: str) -> str:
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:4] + "*" * (len(phone) - 6) + phone[-2:]


def pseudonym(value: str) -> str:
    """A stable, non-reversible short id for correlating one person in telemetry."""
    return hashlib.sha256(("perlinsos:" + value).encode()).hexdigest()[:16]


# Fields of the event contracts that hold personal data, and how each is shown masked.
_NAME_FIELDS = frozenset({"full_name", "first_name", "name", "mother_name"})
_WITHHELD_FIELDS = frozenset(
    {"birth_date", "address", "street", "rt", "rw", "driver_id", "kusuka_number", "sk_number"}
)


def mask_name(name: str) -> str:
    """Initials only: 'Budi Santoso' -> 'B*** S***'."""
    return " ".join(part[:1] + "***" for part in name.split()) or "***"


def mask_personal(value: Any, field: str = "") -> Any:
    """A copy of a decoded event (or any JSON value) with personal data masked: NIKs and
    phones partly, names to initials, dates of birth, addresses and document numbers
    withheld; a NIK- or phone-shaped run in any other text is masked too."""
    from perlinsos_shared.telemetry import scrub

    if isinstance(value, dict):
        return {k: mask_personal(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_personal(v, field) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if field == "nik":
        return mask_nik(value)
    if field.startswith("phone"):
        return mask_phone(value)
    if field in _NAME_FIELDS:
        return mask_name(value)
    if field in _WITHHELD_FIELDS:
        return "(withheld)"
    return scrub(value)
