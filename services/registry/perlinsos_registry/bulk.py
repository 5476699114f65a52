"""Bulk CSV import for agencies that send spreadsheets.

Each row becomes a `perlinsos.enrolment.submitted.v1` published on `registry.intake.v1`,
the same path as any agency system; the outcome of each row is then read from registry's
record of submissions and written to a result CSV beside the input.

The row → submission mapping is pure (`row_to_submission`); the rest is the adapter.
Spreadsheet habits handled: a UTF-8 BOM, `;` or tab as separator (Excel in an Indonesian
locale writes `;`), a leading apostrophe that keeps a NIK from turning into 2.17E+15,
dates as `DD/MM/YYYY` or `DD-MM-YYYY`, and `ya`/`tidak` for the yes/no column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from perlinsos_shared import intake_client

# The template's columns, in order: (column, required, meaning).
COLUMNS: tuple[tuple[str, bool, str], ...] = (
    ("request_id", False, "your reference; left empty: <file name>-<row number>"),
    ("nik", True, "16 digits (a leading ' is ignored)"),
    ("full_name", True, "as on the KTP"),
    ("birth_date", True, "YYYY-MM-DD or DD/MM/YYYY"),
    ("sex", True, "L or P"),
    ("phone", True, "Indonesian mobile: 0812..., +62812..., 62 812-..."),
    ("kecamatan", True, "KTP address"),
    ("kelurahan", True, "KTP address"),
    ("rt", True, "1-3 digits"),
    ("rw", True, "1-3 digits"),
    ("street", False, "KTP address"),
    (
        "occupation",
        True,
        "OJEK_DARING, BECAK, BOAT_PANCUNG, NELAYAN, KETUA_RT, KETUA_RW, "
        "KADER_POSYANDU, KADER_SIAGA, KETUA_LPM",
    ),
    ("sk_number", False, "community roles: decree (SK) number"),
    ("kusuka_number", False, "fishers: KUSUKA card number"),
    ("platform", False, "transport: platform (with driver_id)"),
    ("driver_id", False, "transport: driver id on the platform"),
    ("association", False, "transport: association that vouches (instead of platform)"),
    ("existing_bpjs_tk", False, "ya/tidak (yes/no): already a BPJS Ketenagakerjaan member"),
)
COLUMN_NAMES = tuple(c for c, _, _ in COLUMNS)
RESULT_COLUMNS = ("row", "request_id", "status", "reason_codes", "reason_messages")

TEMPLATE_EXAMPLE: dict[str, str] = {
    "request_id": "DISHUB-2025-000001",
    "nik": "2171101505900003",
    "full_name": "Budi Santoso",
    "birth_date": "1990-05-15",
    "sex": "L",
    "phone": "0812-3456-7890",
    "kecamatan": "Batam Kota",
    "kelurahan": "Belian",
    "rt": "003",
    "rw": "005",
    "street": "Jl. Engku Putri No. 1",
    "occupation": "OJEK_DARING",
    "sk_number": "",
    "kusuka_number": "",
    "platform": "GOJEK",
    "driver_id": "1234567890",
    "association": "",
    "existing_bpjs_tk": "tidak",
}

_DMY = re.compile(r"^(\d{1,2})[/\-.](\d{1,2})[/\-.](\d{4})$")
_YES = {"ya", "y", "yes", "true", "1", "benar"}
_NO = {"tidak", "t", "no", "n", "false", "0", "bukan", ""}


def template_csv() -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMN_NAMES, lineterminator="\n")
    writer.writeheader()
    writer.writerow(TEMPLATE_EXAMPLE)
    return buf.getvalue()


def _cell(row: dict[str, str | None], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _date(value: str | None) -> str | None:
    if value is None:
        return None
    m = _DMY.match(value)
    if m:
        day, month, year = m.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    return value


def _yes_no(value: str | None) -> Any:
    text = (value or "").strip().casefold()
    if text in _YES:
        return True
    if text in _NO:
        return False
    return value  # left as typed: registry answers SCHEMA_INVALID for it


def row_to_submission(
    row: dict[str, str | None], agency: str, row_number: int, file_stem: str
) -> tuple[str, dict[str, Any]]:
    """(request_id, data) of one spreadsheet row; what is wrong is registry's to say."""
    request_id = _cell(row, "request_id") or f"{file_stem}-{row_number:05d}"
    nik = (_cell(row, "nik") or "").lstrip("'")
    sex = _cell(row, "sex")
    occupation = _cell(row, "occupation")
    data: dict[str, Any] = {
        "agency": agency,
        "request_id": request_id,
        "nik": nik,
        "full_name": _cell(row, "full_name"),
        "birth_date": _date(_cell(row, "birth_date")),
        "sex": sex.upper() if sex else None,
        "phone": (_cell(row, "phone") or "").lstrip("'"),
        "address": {
            name: _cell(row, name) for name in ("kecamatan", "kelurahan", "rt", "rw", "street")
        },
        "occupation": occupation.upper().replace(" ", "_") if occupation else None,
        "evidence": {
            name: _cell(row, name)
            for name in ("sk_number", "kusuka_number", "platform", "driver_id", "association")
            if _cell(row, name)
        },
        "existing_bpjs_tk": _yes_no(row.get("existing_bpjs_tk")),
    }
    return request_id, {k: v for k, v in data.items() if v is not None}


def read_rows(text: str) -> list[dict[str, str | None]]:
    """Rows of a CSV text (BOM, `,` `;` or tab separated, headers case-insensitive)."""
    text = text.lstrip("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if reader.fieldnames is None:
        return []
    reader.fieldnames = [f.strip().casefold().replace(" ", "_") for f in reader.fieldnames]
    return [
        dict(r) for r in reader if any((v or "").strip() for v in r.values() if isinstance(v, str))
    ]


@dataclass
class RowOutcome:
    row: int
    request_id: str
    status: str  # accepted | refused | pending
    reasons: list[dict[str, Any]]

    def as_csv(self) -> dict[str, str]:
        return {
            "row": str(self.row),
            "request_id": self.request_id,
            "status": self.status,
            "reason_codes": ";".join(r["code"] for r in self.reasons),
            "reason_messages": " | ".join(
                f"{r['field']}: {r['message']}" if r.get("field") else r["message"]
                for r in self.reasons
            ),
        }


def result_path(source: Path) -> Path:
    return source.with_name(f"{source.stem}.result.csv")


def write_results(path: Path, outcomes: Iterable[RowOutcome]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for o in outcomes:
            writer.writerow(o.as_csv())


async def publish_rows(
    producer: AIOKafkaProducer,
    agency: str,
    rows: list[tuple[str, dict[str, Any]]],
    on_sent: Callable[[int], None] | None = None,
    keys_dir: Path | None = None,
) -> None:
    """Publish (request_id, data) rows like an agency system: key NIK, structured CloudEvent,
    signed with the agency's key from `keys_dir` (default: the state directory's)."""
    await intake_client.publish_submissions(
        producer,
        ((agency, str(data.get("nik") or request_id), data) for request_id, data in rows),
        on_sent,
        flush_every=500,
        keys_dir=keys_dir,
    )
