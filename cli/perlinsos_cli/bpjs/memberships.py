"""BPJS's answer to a collective registration, read into one outcome per row: pure.

Each row names a NIK and either a KPJ (membership number) with the date BPJS's cover
starts, or the reason BPJS refused the person. A row that cannot be used gets an outcome
saying why; nothing is sent for it. Codes:

- `KPJ_ASSIGNED`: a KPJ and BPJS's cover start: stored with the participant.
- `ALREADY_BPJS_MEMBER`: refused because the person is already a member: eligibility
  decides the person again, which frees the place for the waitlist.
- `REFUSED`: another refusal (wrong data, for example): listed for the agency to correct.
- `MISSING_COLUMN`: the file lacks a column every row needs (every row gets this).
- `UNREADABLE_ROW`: a NIK that is not 16 digits, a KPJ that is not 11 digits, a date that
  is not a date, neither a KPJ nor a reason, or both.
- `DUPLICATE_ROW`: the same NIK on an earlier row (the earlier row counts).
- `UNKNOWN_NIK`: no participant with this NIK (decided against registry's records).
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass, replace
from datetime import date, datetime

from perlinsos_cli.bpjs.files import ColumnMap, Table, find_columns

KPJ_ASSIGNED = "KPJ_ASSIGNED"
ALREADY_BPJS_MEMBER = "ALREADY_BPJS_MEMBER"
REFUSED = "REFUSED"
MISSING_COLUMN = "MISSING_COLUMN"
UNREADABLE_ROW = "UNREADABLE_ROW"
DUPLICATE_ROW = "DUPLICATE_ROW"
UNKNOWN_NIK = "UNKNOWN_NIK"
SENT = frozenset({KPJ_ASSIGNED, ALREADY_BPJS_MEMBER, REFUSED})  # rows that travel as events

KPJ = re.compile(r"^\d{11}$")
REQUIRED = ("nik", "kpj", "cover_start", "refusal")


def clean_nik(value: str) -> str | None:
    digits = re.sub(r"[\s.\-']", "", value)
    return digits if len(digits) == 16 and digits.isdigit() else None


def clean_kpj(value: str) -> str | None:
    digits = re.sub(r"[\s.\-']", "", value)
    return digits if KPJ.match(digits) else None


def parse_date(value: str) -> date | None:
    """ISO (2026-01-31, as XLSX date cells are read) or Indonesian day-first (31/01/2026)."""
    text = value.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class MembershipRow:
    row: int
    nik: str | None  # the cleaned NIK, or None when it could not be read
    outcome: str
    kpj: str | None = None
    cover_start: date | None = None
    refusal: str | None = None
    message: str = ""


def read_memberships(table: Table, columns: ColumnMap) -> list[MembershipRow]:
    found, missing = find_columns(table.headers, columns.memberships)
    if missing:
        names = ", ".join(columns.memberships[m][0] for m in missing)
        return [
            MembershipRow(n, None, MISSING_COLUMN, message=f"kolom tidak ada: {names}")
            for n, _ in table.rows
        ]
    out: list[MembershipRow] = []
    seen: set[str] = set()
    already = [a.casefold() for a in columns.already_member]
    for number, cells in table.rows:
        raw = {v: cells.get(found[v], "").strip() for v in REQUIRED}
        nik = clean_nik(raw["nik"])
        if nik is None:
            out.append(MembershipRow(number, None, UNREADABLE_ROW, message="NIK bukan 16 digit"))
            continue
        if nik in seen:
            out.append(MembershipRow(number, nik, DUPLICATE_ROW, message="NIK sudah di baris lain"))
            continue
        seen.add(nik)
        out.append(_answer(number, nik, raw, already))
    return out


def _answer(number: int, nik: str, raw: dict[str, str], already: list[str]) -> MembershipRow:
    if raw["kpj"] and raw["refusal"]:
        return MembershipRow(number, nik, UNREADABLE_ROW, message="KPJ dan alasan penolakan")
    if raw["refusal"]:
        code = (
            ALREADY_BPJS_MEMBER if any(a in raw["refusal"].casefold() for a in already) else REFUSED
        )
        return MembershipRow(number, nik, code, refusal=raw["refusal"][:200])
    if not raw["kpj"]:
        return MembershipRow(number, nik, UNREADABLE_ROW, message="tidak ada KPJ atau alasan")
    kpj = clean_kpj(raw["kpj"])
    if kpj is None:
        return MembershipRow(number, nik, UNREADABLE_ROW, message="KPJ bukan 11 digit")
    start = parse_date(raw["cover_start"])
    if start is None:
        return MembershipRow(number, nik, UNREADABLE_ROW, message="tanggal mulai tidak terbaca")
    return MembershipRow(number, nik, KPJ_ASSIGNED, kpj=kpj, cover_start=start)


def mark_unknown(rows: list[MembershipRow], known: Set[str]) -> list[MembershipRow]:
    """Rows that would travel but name no participant become `UNKNOWN_NIK`."""
    return [
        replace(r, outcome=UNKNOWN_NIK, message="NIK tidak terdaftar di perlinsos")
        if r.outcome in SENT and r.nik not in known
        else r
        for r in rows
    ]
