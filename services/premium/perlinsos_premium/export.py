"""Finance export: a summary sheet and a sheet per funding line for reconciliation with BPJS.

The figures come from premium's own tables: the summary sheet from the line-month
totals (the same numbers as the latest `premium.summaries.v1` revision), each line's
sheet from the ledger and adjustments, so its total equals the summary's `amount_idr`.
The files hold NIKs and names: they are marked RAHASIA (personal data, UU 27/2022 on
personal data protection) in their content, their names and their properties, and are
written readable by their owner only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from perlinsos_premium.arrears import arrears_fields
from perlinsos_premium.billing import fiscal_year, period_index
from perlinsos_premium.budget import places_fields
from perlinsos_premium.summaries import arrears_now, budget_position, funded_places
from perlinsos_shared.clock import now_local
from perlinsos_shared.events import FundingLine

PERSONAL_DATA_NOTICE = (
    "RAHASIA - berisi data pribadi (NIK, nama) peserta; hanya untuk rekonsiliasi iuran "
    "dengan BPJS Ketenagakerjaan. Jangan disebarluaskan (UU 27/2022 Pelindungan Data Pribadi)."
)
RUPIAH_FORMAT = '"Rp"#,##0;-"Rp"#,##0'

SUMMARY_HEADERS = (
    "Jalur pendanaan",
    "Status",
    "Revisi",
    "Peserta",
    "JKK (Rp)",
    "JKM (Rp)",
    "Penyesuaian (Rp)",
    "Jumlah (Rp)",
    "Pagu APBD (Rp)",
    "Anggaran terpakai (Rp)",
    "Dibayar (Rp)",
    "Terutang (Rp)",
    "Risiko putus kepesertaan",
    "Bulan belum dibayar lewat jatuh tempo",
    "Peserta berisiko",
    "Kepesertaan putus pada (jika tidak dibayar)",
    "Tempat didanai (kuota)",
    "Peserta di atas kuota",
    "Biaya di atas kuota (Rp)",
)
SUMMARY_MONEY = {4, 5, 6, 7, 8, 9, 10, 11, 18}  # 0-based columns holding rupiah
PARTICIPANT_HEADERS = (
    "NIK",
    "Nama",
    "Bulan iuran",
    "Jumlah bulan",
    "JKK (Rp)",
    "JKM (Rp)",
    "Penyesuaian (Rp)",
    "Jumlah (Rp)",
)
PARTICIPANT_MONEY = {4, 5, 6, 7}


@dataclass(frozen=True)
class LineTotals:
    funding_line: str
    status: str
    revision: int
    participants: int
    jkk_idr: int
    jkm_idr: int
    adjustments_idr: int
    budget_idr: int
    budget_used_idr: int
    paid_idr: int
    lapse_risk: bool
    months_unpaid: int = 0
    people_at_risk: int = 0
    lapses_on: date | None = None
    places_funded: int | None = None
    above_quota: int = 0
    above_quota_idr: int = 0

    @property
    def amount_idr(self) -> int:
        return self.jkk_idr + self.jkm_idr + self.adjustments_idr

    @property
    def outstanding_idr(self) -> int:
        return max(0, self.amount_idr - self.paid_idr)

    def cells(self) -> list[Any]:
        return [
            self.funding_line,
            self.status,
            self.revision,
            self.participants,
            self.jkk_idr,
            self.jkm_idr,
            self.adjustments_idr,
            self.amount_idr,
            self.budget_idr,
            self.budget_used_idr,
            self.paid_idr,
            self.outstanding_idr,
            "YA" if self.lapse_risk else "tidak",
            self.months_unpaid,
            self.people_at_risk,
            self.lapses_on.isoformat() if self.lapses_on else "",
            "" if self.places_funded is None else self.places_funded,
            self.above_quota,
            self.above_quota_idr,
        ]


@dataclass(frozen=True)
class ParticipantLine:
    nik: str
    full_name: str
    months: str
    month_count: int
    jkk_idr: int
    jkm_idr: int
    adjustments_idr: int

    @property
    def amount_idr(self) -> int:
        return self.jkk_idr + self.jkm_idr + self.adjustments_idr

    def cells(self) -> list[Any]:
        return [
            self.nik,
            self.full_name,
            self.months,
            self.month_count,
            self.jkk_idr,
            self.jkm_idr,
            self.adjustments_idr,
            self.amount_idr,
        ]


@dataclass
class FinanceExport:
    period: str
    generated_at: datetime
    lines: list[LineTotals]
    participants: dict[str, list[ParticipantLine]] = field(default_factory=dict)

    def total(self, attr: str) -> int:
        return sum(int(getattr(line, attr)) for line in self.lines)


async def gather(pool: asyncpg.Pool, period: str, today: date) -> FinanceExport:
    period_index(period)
    rows = {
        r["funding_line"]: r
        for r in await pool.fetch("SELECT * FROM summaries WHERE period = $1", period)
    }
    budgets = await budget_position(pool)
    places = await funded_places(pool)
    months, arrears = await arrears_now(pool, today)
    paid = {(m.funding_line, m.period): m.paid_idr for m in months}
    lines = []
    for fl in FundingLine:
        line = fl.value
        r = rows.get(line)
        budget, used = budgets.get((line, fiscal_year(period)), (0, 0))
        state = arrears.get(line)
        billed = r["participants"] if r else 0
        lines.append(
            LineTotals(
                funding_line=line,
                status=r["status"] if r else "provisional",
                revision=r["revision"] if r else 0,
                participants=billed,
                jkk_idr=int(r["jkk_idr"]) if r else 0,
                jkm_idr=int(r["jkm_idr"]) if r else 0,
                adjustments_idr=int(r["adjustments_idr"]) if r else 0,
                budget_idr=budget,
                budget_used_idr=used,
                paid_idr=paid.get((line, period), 0),
                **arrears_fields(state),
                **places_fields(
                    places.get((line, fiscal_year(period))),
                    billed,
                    (int(r["jkk_idr"]) + int(r["jkm_idr"])) if r else 0,
                ),
            )
        )
    people = await pool.fetch(
        "WITH l AS (SELECT participant_id, funding_line, jkk_idr, jkm_idr FROM ledger"
        " WHERE period = $1),"
        " a AS (SELECT participant_id, funding_line, sum(jkk_idr + jkm_idr) AS adj,"
        " string_agg(DISTINCT for_period, ', ' ORDER BY for_period) AS corrected"
        " FROM adjustments WHERE booked_period = $1 GROUP BY 1, 2)"
        " SELECT funding_line, p.nik, p.full_name, participant_id, l.jkk_idr, l.jkm_idr,"
        " a.adj, a.corrected FROM l FULL JOIN a USING (participant_id, funding_line)"
        " LEFT JOIN people p USING (participant_id)"
        " ORDER BY funding_line, p.nik NULLS LAST, participant_id",
        period,
    )
    participants: dict[str, list[ParticipantLine]] = {fl.value: [] for fl in FundingLine}
    for r in people:
        billed = r["jkk_idr"] is not None
        month_labels: list[str] = [period] if billed else []
        if r["corrected"]:
            month_labels.append(f"koreksi {r['corrected']}")
        participants.setdefault(r["funding_line"], []).append(
            ParticipantLine(
                nik=r["nik"] or f"(belum diketahui: {r['participant_id']})",
                full_name=r["full_name"] or "",
                months="; ".join(month_labels),
                month_count=1 if billed else 0,
                jkk_idr=int(r["jkk_idr"] or 0),
                jkm_idr=int(r["jkm_idr"] or 0),
                adjustments_idr=int(r["adj"] or 0),
            )
        )
    return FinanceExport(period, now_local(), lines, participants)


def _title(export: FinanceExport) -> str:
    return (
        f"Iuran JKK/JKM Perlinsos Kota Batam, periode {export.period}, "
        f"dibuat {export.generated_at:%Y-%m-%d %H:%M} WIB"
    )


def summary_total_row(export: FinanceExport) -> list[Any]:
    return [
        "TOTAL",
        "",
        "",
        export.total("participants"),
        export.total("jkk_idr"),
        export.total("jkm_idr"),
        export.total("adjustments_idr"),
        export.total("amount_idr"),
        export.total("budget_idr"),
        export.total("budget_used_idr"),
        export.total("paid_idr"),
        export.total("outstanding_idr"),
        "",
        "",
        export.total("people_at_risk"),
        "",
        "",
        export.total("above_quota"),
        export.total("above_quota_idr"),
    ]


def participant_total_row(rows: list[ParticipantLine]) -> list[Any]:
    return [
        "TOTAL",
        f"{len(rows)} peserta",
        "",
        sum(r.month_count for r in rows),
        sum(r.jkk_idr for r in rows),
        sum(r.jkm_idr for r in rows),
        sum(r.adjustments_idr for r in rows),
        sum(r.amount_idr for r in rows),
    ]


def file_stem(period: str) -> str:
    return f"perlinsos-iuran-{period}-RAHASIA"


def write_xlsx(export: FinanceExport, path: Path) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.properties.title = _title(export)
    wb.properties.subject = "RAHASIA - berisi data pribadi"
    wb.properties.keywords = "RAHASIA; data pribadi; NIK"
    wb.properties.description = PERSONAL_DATA_NOTICE
    wb.properties.creator = "perlinsos premium"
    ws = wb.active
    assert ws is not None
    ws.title = "Ringkasan"
    _sheet(
        ws,
        export,
        SUMMARY_HEADERS,
        [line.cells() for line in export.lines],
        summary_total_row(export),
        SUMMARY_MONEY,
        Font,
    )
    for line, rows in export.participants.items():
        sheet = wb.create_sheet(line)
        _sheet(
            sheet,
            export,
            PARTICIPANT_HEADERS,
            [r.cells() for r in rows],
            participant_total_row(rows),
            PARTICIPANT_MONEY,
            Font,
        )
        for row in sheet.iter_rows(min_row=HEADER_ROW + 1, max_col=1):
            row[0].number_format = "@"  # NIK as text: 16 digits, leading zeros kept
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    os.chmod(path, 0o600)
    return path


HEADER_ROW = 4  # rows 1-2: notice and title; row 4: headers; data from row 5


def _sheet(
    ws: Any,
    export: FinanceExport,
    headers: Iterable[str],
    rows: list[list[Any]],
    total: list[Any],
    money: set[int],
    font: Any,
) -> None:
    ws.cell(row=1, column=1, value=PERSONAL_DATA_NOTICE).font = font(bold=True, color="C00000")
    ws.cell(row=2, column=1, value=_title(export))
    for c, h in enumerate(headers, start=1):
        ws.cell(row=HEADER_ROW, column=c, value=h).font = font(bold=True)
    for r, cells in enumerate([*rows, total], start=HEADER_ROW + 1):
        for c, value in enumerate(cells):
            cell = ws.cell(row=r, column=c + 1, value=value)
            if c in money:
                cell.number_format = RUPIAH_FORMAT
            if cells is total:
                cell.font = font(bold=True)
    ws.freeze_panes = ws.cell(row=HEADER_ROW + 1, column=1)
    for c, h in enumerate(headers, start=1):
        ws.column_dimensions[ws.cell(row=HEADER_ROW, column=c).column_letter].width = max(
            12, len(h) + 2
        )


def write_csv(export: FinanceExport, directory: Path) -> list[Path]:
    """A summary file and one file per line; `;`-separated UTF-8 (BOM) for id-ID Excel,
    rupiah as whole numbers without separators."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = file_stem(export.period)
    out = [
        _csv(
            directory / f"{stem}-ringkasan.csv",
            export,
            SUMMARY_HEADERS,
            [line.cells() for line in export.lines],
            summary_total_row(export),
        )
    ]
    for line, rows in export.participants.items():
        out.append(
            _csv(
                directory / f"{stem}-{line}.csv",
                export,
                PARTICIPANT_HEADERS,
                [r.cells() for r in rows],
                participant_total_row(rows),
            )
        )
    return out


def _csv(
    path: Path,
    export: FinanceExport,
    headers: Iterable[str],
    rows: list[list[Any]],
    total: list[Any],
) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow([PERSONAL_DATA_NOTICE])
        w.writerow([_title(export)])
        w.writerow(list(headers))
        w.writerows(rows)
        w.writerow(total)
    os.chmod(path, 0o600)
    return path
