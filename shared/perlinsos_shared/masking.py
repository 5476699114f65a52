"""Masking personal data before it goes anywhere it does not belong (logs, spans, screens)."""

from __future__ import annotations

import hashlib


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
