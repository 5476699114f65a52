"""BPJS's monthly bill against premium's ledger for one funding line and month: pure.

A bill row names a person by KPJ or NIK, the number of months billed and the amount.
The ledger says, per participant, what the city owes for that month (the ledger row plus
adjustments booked in it) and so what BPJS should bill: one month, that amount. Findings:

- `BILLED_NOT_COVERED`: BPJS bills someone the city does not cover for this line and month
  (or a KPJ/NIK perlinsos does not know).
- `COVERED_NOT_BILLED`: the city covers someone BPJS does not bill: their protection may
  not exist.
- `AMOUNT_DIFFERS` / `MONTHS_DIFFERS`: billed, but not what the ledger says.
- `DUPLICATE_ROW`: the same person on an earlier row of the bill (the earlier row counts).
- `UNREADABLE_ROW` / `MISSING_COLUMN`: a row, or the file, that cannot be compared.
- `MATCHED`: as the ledger says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from perlinsos_cli.bpjs.files import ColumnMap, Table, find_columns
from perlinsos_cli.bpjs.memberships import clean_kpj, clean_nik

MATCHED = "MATCHED"
BILLED_NOT_COVERED = "BILLED_NOT_COVERED"
COVERED_NOT_BILLED = "COVERED_NOT_BILLED"
AMOUNT_DIFFERS = "AMOUNT_DIFFERS"
MONTHS_DIFFERS = "MONTHS_DIFFERS"
DUPLICATE_ROW = "DUPLICATE_ROW"
UNREADABLE_ROW = "UNREADABLE_ROW"
MISSING_COLUMN = "MISSING_COLUMN"
FINDINGS = (
    BILLED_NOT_COVERED,
    COVERED_NOT_BILLED,
    AMOUNT_DIFFERS,
    MONTHS_DIFFERS,
    DUPLICATE_ROW,
    UNREADABLE_ROW,
    MISSING_COLUMN,
)


@dataclass(frozen=True)
class BillRow:
    row: int
    nik: str | None  # resolved NIK (from the NIK column or the KPJ), None if unknown
    reference: str  # what the bill names the person by (a KPJ or a NIK), as written
    months: int | None
    amount_idr: int | None
    problem: str = ""  # why the row could not be read, or ""


@dataclass(frozen=True)
class Owed:
    """What the ledger says BPJS should bill for one participant in the month."""

    nik: str
    full_name: str
    amount_idr: int
    months: int = 1


@dataclass(frozen=True)
class Finding:
    code: str
    row: int | None  # the bill's row, None for someone the bill leaves out
    reference: str
    billed_idr: int
    owed_idr: int
    billed_months: int | None = None
    owed_months: int | None = None
    message: str = ""


@dataclass
class Reconciliation:
    findings: list[Finding] = field(default_factory=list)
    billed_idr: int = 0
    owed_idr: int = 0
    rows: int = 0

    @property
    def difference_idr(self) -> int:
        return self.billed_idr - self.owed_idr

    def counts(self) -> dict[str, int]:
        out = {code: 0 for code in (MATCHED, *FINDINGS)}
        for f in self.findings:
            out[f.code] += 1
        return out

    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.code != MATCHED]


def money(text: str) -> int | None:
    """Rupiah as BPJS writes it: "Rp16.800", "16,800", "16800" or "16800.00"."""
    t = re.sub(r"(?i)rp|\s", "", text)
    t = re.sub(r"[.,]00$", "", t)
    t = t.replace(".", "").replace(",", "")
    return int(t) if t.isdigit() else None


def read_bill(table: Table, columns: ColumnMap, nik_of_kpj: Mapping[str, str]) -> list[BillRow]:
    """Bill rows with the person resolved to a NIK; `MISSING_COLUMN` rows when the file
    lacks months, amount, or both ways of naming a person."""
    found, _ = find_columns(table.headers, columns.invoice)
    lacking = [v for v in ("months", "amount") if v not in found]
    if "kpj" not in found and "nik" not in found:
        lacking.insert(0, "kpj/nik")
    if lacking:
        return [
            BillRow(n, None, "", None, None, problem=f"{MISSING_COLUMN}: {', '.join(lacking)}")
            for n, _ in table.rows
        ]
    out = []
    for number, cells in table.rows:
        kpj_text = cells.get(found.get("kpj", ""), "").strip()
        nik_text = cells.get(found.get("nik", ""), "").strip()
        months_text = cells.get(found["months"], "").strip()
        months = int(months_text) if months_text.isdigit() and int(months_text) > 0 else None
        amount = money(cells.get(found["amount"], ""))
        nik = clean_nik(nik_text) if nik_text else None
        kpj = clean_kpj(kpj_text) if kpj_text else None
        reference = kpj or nik or kpj_text or nik_text
        if nik is None and kpj is not None:
            nik = nik_of_kpj.get(kpj)
        problem = ""
        if not (kpj or (nik_text and nik)):
            problem = "KPJ/NIK tidak terbaca"
        elif months is None:
            problem = "jumlah bulan tidak terbaca"
        elif amount is None:
            problem = "iuran tidak terbaca"
        out.append(BillRow(number, nik, reference, months, amount, problem))
    return out


def reconcile(bill: list[BillRow], owed: Mapping[str, Owed]) -> Reconciliation:
    """Every bill row gets a finding; everyone owed and not billed gets one too."""
    result = Reconciliation(rows=len(bill))
    result.owed_idr = sum(o.amount_idr * o.months for o in owed.values())
    billed: set[str] = set()
    for r in bill:
        if r.problem:
            code = MISSING_COLUMN if r.problem.startswith(MISSING_COLUMN) else UNREADABLE_ROW
            result.findings.append(Finding(code, r.row, r.reference, 0, 0, message=r.problem))
            continue
        assert r.amount_idr is not None and r.months is not None
        result.billed_idr += r.amount_idr
        o = owed.get(r.nik) if r.nik else None
        if r.nik is not None and r.nik in billed:
            code, message = DUPLICATE_ROW, "orang yang sama sudah ditagih di baris lain"
        elif o is None:
            code, message = BILLED_NOT_COVERED, "tidak ditanggung kota untuk jalur dan bulan ini"
        elif r.months != o.months:
            code, message = MONTHS_DIFFERS, "jumlah bulan berbeda"
        elif r.amount_idr != o.amount_idr * o.months:
            code, message = AMOUNT_DIFFERS, "iuran berbeda"
        else:
            code, message = MATCHED, ""
        if r.nik is not None:
            billed.add(r.nik)
        owed_idr = o.amount_idr * o.months if o and code != DUPLICATE_ROW else 0
        result.findings.append(
            Finding(
                code,
                r.row,
                r.reference,
                r.amount_idr,
                owed_idr,
                r.months,
                o.months if o else None,
                message,
            )
        )
    for nik, o in sorted(owed.items()):
        if nik not in billed:
            result.findings.append(
                Finding(
                    COVERED_NOT_BILLED,
                    None,
                    nik,
                    0,
                    o.amount_idr * o.months,
                    None,
                    o.months,
                    "ditanggung kota, tidak ditagih BPJS",
                )
            )
    return result
