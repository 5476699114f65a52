"""`perlinsos bpjs ...`: the registration list out, BPJS's answers in, the bill reconciled.

Each command reads through the read functions of the services that own the data, on
operator pools (eligibility's `store.places_on_line`, registry's `store` BPJS reads,
premium's `queries.billed_by_nik`), and writes files marked as personal data, readable
by their owner only. A file that cannot be read at all changes nothing: one line on
stderr, exit status 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from perlinsos_cli.bpjs import invoice as inv
from perlinsos_cli.bpjs import memberships as mem
from perlinsos_cli.bpjs.files import (
    ColumnMap,
    Table,
    UnreadableFile,
    load_column_map,
    read_table,
    write_personal_csv,
    write_personal_xlsx,
)
from perlinsos_cli.bpjs.registrations import Registrant, cells
from perlinsos_eligibility import store as eligibility_store
from perlinsos_premium.queries import billed_by_nik
from perlinsos_registry import store as registry_store
from perlinsos_shared import operator
from perlinsos_shared.envelope import CONTENT_TYPE, encode, make_event
from perlinsos_shared.events import BpjsMembershipAnswered, FundingLine, InvoiceReconciled
from perlinsos_shared.masking import mask_nik
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import BPJS_MEMBERSHIPS, RECONCILIATIONS

app = typer.Typer(
    help="BPJS Ketenagakerjaan: registration list out, membership numbers in, bill reconciled.",
    no_args_is_help=True,
)
console = Console()
SOURCE = "finance/perlinsos-cli"
NAMESPACE = uuid.UUID("6f0d3c8e-4b1a-5e2f-9c7d-2a8b1e4f6d30")  # event ids from file content

COLUMNS_OPTION = typer.Option(
    None, "--columns", help="The city's column map (YAML); the shipped one if not given."
)


class FileFormat(StrEnum):
    XLSX = "xlsx"
    CSV = "csv"


def _read(path: Path) -> tuple[bytes, Table]:
    try:
        content = path.read_bytes()
        return content, read_table(path)
    except (OSError, UnreadableFile) as exc:
        operator.fail(f"cannot read {path.name} ({exc}); nothing was changed")


def result_path(source: Path) -> Path:
    return source.with_name(f"{source.stem}.result.csv")


# --- export-registrations ----------------------------------------------------------------


async def gather_registrants(line: str, since: date | None, settings: Settings) -> list[Registrant]:
    """Who holds a place on `line` (eligibility) and is not yet a member (registry)."""
    async with operator.operator_pool("eligibility", settings=settings) as el:
        places = await eligibility_store.places_on_line(el, line, since)
    async with operator.operator_pool("registry", migrate=True, settings=settings) as reg:
        rows = await registry_store.to_register_with_bpjs(reg, list(places))
    return [
        Registrant(
            nik=r["nik"],
            full_name=r["full_name"],
            birth_date=r["birth_date"],
            sex=r["sex"],
            phone_e164=r["phone_e164"],
            address=r["address"],
            occupation=r["occupation"],
            cover_start=places[r["participant_id"]][0],
            funding_line=places[r["participant_id"]][1],
        )
        for r in rows
    ]


@app.command("export-registrations")
def export_registrations(
    line: FundingLine = typer.Option(..., "--line", help="The funding line to register."),
    since: str = typer.Option(
        None, "--since", callback=operator.day, help="Only places decided on or after this day."
    ),
    fmt: FileFormat = typer.Option(FileFormat.XLSX, "--format", help="The file format."),
    out: Path = typer.Option(
        None, "--out", help="The file; in the current directory if not given."
    ),
    columns_file: Path = COLUMNS_OPTION,
) -> None:
    """Everyone eligible on the line and not yet given a KPJ by BPJS, in the columns of a
    collective BPU upload. The file holds personal data: readable by its owner only."""
    columns = load_column_map(columns_file)
    settings = operator.operator_settings()
    people = asyncio.run(
        gather_registrants(line.value, date.fromisoformat(since) if since else None, settings)
    )
    headers = [h for h, _ in columns.registration]
    path = out or Path(f"bpjs-pendaftaran-{line.value}-RAHASIA.{fmt.value}")
    if fmt is FileFormat.XLSX:
        rows = [cells(p, columns, dates_as_text=False) for p in people]
        write_personal_xlsx(
            path, f"Pendaftaran BPU kolektif {line.value}", [("BPU", headers, rows)]
        )
    else:
        write_personal_csv(path, headers, [cells(p, columns, dates_as_text=True) for p in people])
    console.print(f"{len(people)} people to register on {line.value} -> {path} (RAHASIA)")


# --- import-memberships ------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    rows: list[mem.MembershipRow]
    statuses: dict[int, str]  # registry's reply per row sent
    result_file: Path


def membership_event(import_id: str, r: mem.MembershipRow) -> BpjsMembershipAnswered:
    assert r.nik is not None
    return BpjsMembershipAnswered(
        import_id=import_id,
        row=r.row,
        nik=r.nik,
        answer=r.outcome,  # type: ignore[arg-type]  # one of mem.SENT
        kpj=r.kpj,
        cover_start=r.cover_start,
        refusal=r.refusal,
    )


async def run_import(
    path: Path, columns: ColumnMap, settings: Settings, timeout: float
) -> ImportResult:
    content, table = _read(path)
    import_id = hashlib.sha256(content).hexdigest()
    rows = mem.read_memberships(table, columns)
    async with (
        operator.operator_pool("registry", migrate=True, settings=settings) as reg,
        operator.operator_producer("perlinsos-bpjs-import", settings) as producer,
    ):
        known = await registry_store.known_niks(reg, [r.nik for r in rows if r.nik])
        rows = mem.mark_unknown(rows, known)
        sent = [r for r in rows if r.outcome in mem.SENT]
        for r in sent:
            event = make_event(SOURCE, membership_event(import_id, r))
            # The same row of the same file is the same event: a second import is a repeat.
            event.id = str(uuid.uuid5(NAMESPACE, f"{import_id}:{r.row}"))
            await producer.send(
                BPJS_MEMBERSHIPS.name,
                encode(event),
                key=(r.nik or "").encode(),
                headers=[("content-type", CONTENT_TYPE.encode())],
            )
        await producer.flush()
        deadline = time.monotonic() + timeout
        statuses: dict[int, str] = {}
        while sent:
            statuses = await registry_store.bpjs_replies(reg, import_id)
            if len(statuses) >= len(sent) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
    result = write_personal_csv(
        result_path(path),
        ["row", "nik", "outcome", "registry", "kpj", "cover_start", "message"],
        [
            [
                r.row,
                r.nik or "",
                r.outcome,
                statuses.get(r.row, "pending" if r.outcome in mem.SENT else ""),
                r.kpj or "",
                r.cover_start.isoformat() if r.cover_start else "",
                r.refusal or r.message,
            ]
            for r in rows
        ],
    )
    return ImportResult(rows, statuses, result)


@app.command("import-memberships")
def import_memberships(
    file: Path = typer.Argument(
        ..., help="BPJS's answer (CSV or XLSX): NIK, KPJ, cover start or refusal reason."
    ),
    timeout: float = typer.Option(120.0, help="Seconds to wait for registry's replies."),
    columns_file: Path = COLUMNS_OPTION,
) -> None:
    """Send each row of BPJS's answer to registry (bpjs.memberships.v1) and write an
    outcome per row next to the file (`NAME.result.csv`)."""
    columns = load_column_map(columns_file)
    result = asyncio.run(run_import(file, columns, operator.operator_settings(), timeout))
    counts: dict[str, int] = {}
    for r in result.rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    console.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no rows")
    for r in result.rows:
        if r.outcome == mem.REFUSED:
            console.print(
                f"  row {r.row}: {mask_nik(r.nik or '')} refused: {r.refusal} "
                "(for the agency to correct)"
            )
    pending = sum(1 for s in result.statuses.values() if s == "pending")
    console.print(
        f"outcomes -> {result.result_file}" + (f" ({pending} pending)" if pending else "")
    )


# --- reconcile-invoice -------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceResult:
    reconciliation: inv.Reconciliation
    event: InvoiceReconciled
    event_id: str
    report: Path
    result_file: Path


async def run_reconcile(
    path: Path,
    line: FundingLine,
    period: str,
    columns: ColumnMap,
    settings: Settings,
    out: Path | None = None,
) -> InvoiceResult:
    content, table = _read(path)
    invoice_id = hashlib.sha256(content).hexdigest()
    async with operator.operator_pool("registry", migrate=True, settings=settings) as reg:
        kpjs = [v for _, c in table.rows for v in c.values() if mem.clean_kpj(v)]
        nik_of_kpj = await registry_store.niks_of_kpjs(reg, kpjs)
    async with operator.operator_pool("premium", settings=settings) as prem:
        billed = await billed_by_nik(prem, line.value, period)
    owed = {nik: inv.Owed(nik, name, amount) for nik, (name, amount) in billed.items()}
    rec = inv.reconcile(inv.read_bill(table, columns, nik_of_kpj), owed)
    event = InvoiceReconciled(
        funding_line=line,
        period=period,
        invoice_id=invoice_id,
        rows=rec.rows,
        billed_idr=rec.billed_idr,
        owed_idr=rec.owed_idr,
        difference_idr=rec.difference_idr,
        counts=rec.counts(),
    )
    report = out or path.with_name(f"{path.stem}-rekonsiliasi-{line.value}-{period}-RAHASIA.xlsx")
    write_report(report, rec, line.value, period, owed)
    result = write_personal_csv(
        result_path(path),
        ["row", "reference", "outcome", "billed_idr", "owed_idr", "message"],
        [
            [f.row or "", f.reference, f.code, f.billed_idr, f.owed_idr, f.message]
            for f in rec.findings
        ],
    )
    key = f"{line.value}:{period}"
    envelope = make_event(SOURCE, event, subject=key)
    # The same bill for the same line and month is the same event: reconciling twice is a repeat.
    envelope.id = str(uuid.uuid5(NAMESPACE, f"{invoice_id}:{key}"))
    async with operator.operator_producer("perlinsos-bpjs-reconcile", settings) as producer:
        await producer.send_and_wait(
            RECONCILIATIONS.name,
            encode(envelope),
            key=key.encode(),
            headers=[("content-type", CONTENT_TYPE.encode())],
        )
    return InvoiceResult(rec, event, envelope.id, report, result)


def write_report(
    path: Path, rec: inv.Reconciliation, line: str, period: str, owed: dict[str, inv.Owed]
) -> Path:
    counts = rec.counts()
    summary: list[list[object]] = [
        ["Jalur pendanaan", line],
        ["Bulan iuran", period],
        ["Baris tagihan", rec.rows],
        ["Ditagih BPJS (Rp)", rec.billed_idr],
        ["Menurut buku besar (Rp)", rec.owed_idr],
        ["Selisih (Rp)", rec.difference_idr],
        *([code, n] for code, n in counts.items()),
    ]
    headers = [
        "Baris",
        "KPJ/NIK",
        "Nama",
        "Temuan",
        "Bulan ditagih",
        "Bulan seharusnya",
        "Ditagih (Rp)",
        "Seharusnya (Rp)",
        "Keterangan",
    ]

    def row(f: inv.Finding) -> list[object]:
        name = owed[f.reference].full_name if f.reference in owed else ""
        return [
            f.row or "",
            f.reference,
            name,
            f.code,
            f.billed_months or "",
            f.owed_months or "",
            f.billed_idr,
            f.owed_idr,
            f.message,
        ]

    return write_personal_xlsx(
        path,
        f"Rekonsiliasi tagihan BPJS {line} {period}",
        [
            ("Ringkasan", ["Ukuran", "Nilai"], summary),
            ("Temuan", headers, [row(f) for f in rec.problems()]),
            ("Semua baris", headers, [row(f) for f in rec.findings]),
        ],
    )


@app.command("reconcile-invoice")
def reconcile_invoice(
    file: Path = typer.Argument(..., help="BPJS's bill (CSV or XLSX): KPJ or NIK, months, amount."),
    line: FundingLine = typer.Option(..., "--line", help="The funding line billed."),
    period: str = typer.Option(..., callback=operator.period, help="The month billed (YYYY-MM)."),
    out: Path = typer.Option(
        None, "--out", help="The XLSX for finance; next to the bill if not given."
    ),
    columns_file: Path = COLUMNS_OPTION,
) -> None:
    """BPJS's bill against premium's ledger: billed-not-covered, covered-not-billed, amount
    and month differences, duplicates, totals; an XLSX for finance, an outcome per row
    next to the bill, and the counts on premium.reconciliations.v1."""
    columns = load_column_map(columns_file)
    r = asyncio.run(run_reconcile(file, line, period, columns, operator.operator_settings(), out))
    rec = r.reconciliation
    console.print(
        f"{line.value} {period}: billed Rp{rec.billed_idr:,}, ledger Rp{rec.owed_idr:,}, "
        f"difference Rp{rec.difference_idr:,}".replace(",", ".")
    )
    for code, n in rec.counts().items():
        if n:
            console.print(f"  {code}: {n}")
    console.print(f"report -> {r.report} (RAHASIA); outcomes -> {r.result_file}")
