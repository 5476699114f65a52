"""Intake payloads for tests: well-formed data objects one changes a field of.

Not used in production. Kept beside the code whose contract they exercise, so registry's
tests need nothing from the `perlinsos` CLI package.
"""

from __future__ import annotations

from datetime import date
from typing import Any


def nik(n: int) -> str:
    """A well-formed NIK of a man born 15 May 1990 in Batam Kota, serial `n` (1-9999)."""
    return f"217110150590{n:04d}"


def enrolment(
    n: int = 1, agency: str = "DISHUB", rid: str | None = None, **data: Any
) -> dict[str, Any]:
    """A valid `perlinsos.enrolment.submitted.v1` data object for person `n`."""
    return {
        "agency": agency,
        "request_id": rid or f"{agency}-{n}",
        "nik": nik(n),
        "full_name": "Budi Santoso",
        "birth_date": "1990-05-15",
        "sex": "L",
        "phone": "0812-3456-7890",
        "address": {"kecamatan": "Batam Kota", "kelurahan": "Belian", "rt": "003", "rw": "005"},
        "occupation": "OJEK_DARING",
        "evidence": {"platform": "GOJEK", "driver_id": "1234567890"},
        **data,
    }


def exit_of(
    n: int, on: date, agency: str = "DISHUB", rid: str = "X-1", **data: Any
) -> dict[str, Any]:
    """A valid `perlinsos.enrolment.exit-reported.v1` data object for person `n`."""
    return {
        "agency": agency,
        "request_id": rid,
        "nik": nik(n),
        "reason": "MOVED_AWAY",
        "effective_date": on.isoformat(),
        **data,
    }
