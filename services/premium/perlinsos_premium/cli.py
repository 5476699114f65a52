"""Operator and finance commands (`perlinsos premium ...`, `perlinsos finance ...`).

They work on premium's own schema (as premium's role) and, for payments, publish to
`premium.payments.v1` like any finance system would. Screens show NIKs masked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from perlinsos_shared import operator
from perlinsos_shared.clock import current_period, today_local
from perlinsos_shared.events import FundingLine
from perlinsos_shared.masking import mask_nik

console = Console()
T = TypeVar("T")

app = typer.Typer(help="Operator commands of the premium service.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Commands that read or act on the premium service's own state."""


finance_app = typer.Typer(help="Finance exports (CSV, XLSX).", no_args_is_help=True)


@finance_app.callback()
def _finance_root() -> None:
    """Monthly premium liabilities per funding line, for BPKAD / Disnaker finance."""


def idr(amount: int) -> str:
    """Rupiah as Indonesian finance writes it: Rp2.721.600.000, -Rp16.800."""
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp{abs(amount):,}".replace(",", ".")


class ExportFormat(StrEnum):
    XLSX = "xlsx"
    CSV = "csv"


def _with_pool(fn: Callable[[asyncpg.Pool], Awaitable[T]], *, writes: bool = False) -> T:
    """Reads go through the operators' read-only login; changes (with migrations first)
    log in as premium."""
    return operator.with_pool("premium", fn, migrate=writes)


@app.command()
def close(
    period: str = typer.Argument(..., callback=operator.period, help="The month (YYYY-MM)."),
) -> None:
    """Close a month: bill every running cover, freeze every line, publish `closed`."""
    from perlinsos_premium.closing import CloseRefused, close_month

    try:
        result = _with_pool(lambda pool: close_month(pool, period, today_local()), writes=True)
    except CloseRefused as exc:
        operator.fail(str(exc), 1)
    if result.already_closed:
        console.print(f"{period} is already closed; nothing changed, nothing published")
        return
    table = Table(title=f"{period} closed in {result.seconds:.2f}s")
    for col in ("funding line", "revision", "participants", "JKK", "JKM", "adjustments", "total"):
        table.add_column(col, justify="left" if col == "funding line" else "right")
    for s in result.summaries:
        table.add_row(
            s.funding_line.value,
            str(s.revision),
            f"{s.participants:,}",
            idr(s.jkk_idr),
            idr(s.jkm_idr),
            idr(s.adjustments_idr),
            idr(s.amount_idr),
        )
    console.print(table)


@app.command()
def status(
    period: str = typer.Option(
        None, callback=operator.period, help="Show only this month (YYYY-MM)."
    ),
) -> None:
    """Per funding line: owed, paid, outstanding, due dates missed, people at risk, the
    date cover lapses if nothing is paid, and people billed above the funded places."""
    from perlinsos_premium.arrears import due_date
    from perlinsos_premium.billing import fiscal_year
    from perlinsos_premium.budget import places_fields
    from perlinsos_premium.queries import liability_by_line
    from perlinsos_premium.summaries import arrears_now, funded_places, load_terms

    today = today_local()
    this_month = current_period()

    async def load(pool: asyncpg.Pool):  # type: ignore[no-untyped-def]
        months, arrears = await arrears_now(pool, today)
        liability = await liability_by_line(pool, this_month)
        return months, arrears, await load_terms(pool), await funded_places(pool), liability

    months, arrears, terms, places, liability = _with_pool(load)
    table = Table(title=f"premium per line and month (today {today.isoformat()})")
    for col in ("funding line", "month", "owed", "paid", "outstanding", "due", "missed"):
        table.add_column(col, justify="left" if col in ("funding line", "month") else "right")
    for m in months:
        if period and m.period != period:
            continue
        state = arrears.get(m.funding_line)
        late = state.overdue.get(m.period, 0) if state else 0
        table.add_row(
            m.funding_line,
            m.period,
            idr(m.amount_idr),
            idr(m.paid_idr),
            idr(m.outstanding_idr),
            due_date(m.period, terms).isoformat(),
            f"[red]{late} due date(s)[/red]" if late else "-",
        )
    console.print(table)
    lines = Table(title=f"per funding line, {this_month}")
    for col in (
        "funding line",
        "months unpaid",
        "people at risk",
        "cover lapses on",
        "places funded",
        "billed",
        "above quota",
        "cost above quota",
    ):
        lines.add_column(col, justify="left" if col == "funding line" else "right")
    for line in FundingLine:
        state = arrears.get(line.value)
        billed = liability.get(line.value, {})
        funded = places.get((line.value, fiscal_year(this_month)))
        over = places_fields(
            funded,
            billed.get("participants", 0),
            billed.get("jkk_idr", 0) + billed.get("jkm_idr", 0),
        )
        above, cost = over["above_quota"], over["above_quota_idr"]
        lapses = state.lapses_on if state and state.lapse_risk else None
        lines.add_row(
            line.value,
            f"[red]{state.months_unpaid}[/red]" if state and state.months_unpaid else "0",
            f"{state.people_at_risk:,}" if state else "0",
            f"[bold red]{lapses.isoformat()}[/bold red]" if lapses else "-",
            "?" if funded is None else f"{funded:,}",
            f"{billed.get('participants', 0):,}",
            f"[yellow]{above:,}[/yellow]" if above else "0",
            f"{idr(cost)}/month" if above else "-",
        )
    console.print(lines)
    for line in FundingLine:
        state = arrears.get(line.value)
        if state and state.lapse_risk and state.lapses_on:
            console.print(
                f"[bold red]{line.value}: LAPSE RISK[/bold red] - {state.months_unpaid} "
                f"month(s) unpaid past due ({', '.join(state.overdue)}); "
                + (
                    f"{state.people_at_risk:,} people lost their cover on "
                    f"{state.lapses_on.isoformat()}: they must register again"
                    if state.lapsed(today)
                    else f"{state.people_at_risk:,} people lose their cover on "
                    f"{state.lapses_on.isoformat()} unless the line is paid before"
                )
            )


@app.command()
def adjustments(
    period: str = typer.Argument(..., callback=operator.period, help="The month (YYYY-MM)."),
) -> None:
    """Corrections of closed months booked in a period, per participant (NIK masked)."""
    from perlinsos_premium.queries import adjustments_booked

    rows = _with_pool(lambda pool: adjustments_booked(pool, period))
    table = Table(title=f"adjustments booked in {period}")
    for col in ("funding line", "NIK", "for month", "JKK", "JKM", "amount", "reason"):
        table.add_column(col)
    for a in rows:
        table.add_row(
            a.funding_line,
            mask_nik(a.nik) if a.nik else "?",
            a.for_period,
            idr(a.jkk_idr),
            idr(a.jkm_idr),
            idr(a.amount_idr),
            a.reason,
        )
    console.print(table)
    console.print(f"{len(rows)} adjustments, total {idr(sum(a.amount_idr for a in rows))}")


@app.command("record-payment")
def record_payment(
    line: FundingLine = typer.Option(..., "--line", help="The funding line paid for."),
    period: str = typer.Option(
        ..., callback=operator.period, help="The contribution month paid for (YYYY-MM)."
    ),
    amount: int = typer.Option(..., min=1, help="Rupiah paid to BPJS, a whole number."),
    reference: str = typer.Option(..., help="The SP2D or bank transfer reference."),
    paid_on: str = typer.Option(
        None, callback=operator.day, help="The value date (YYYY-MM-DD); today if not given."
    ),
    recorded_by: str = typer.Option(None, "--by", help="Who records the payment."),
) -> None:
    """Record what finance paid BPJS for a line and month (published on premium.payments.v1)."""
    from perlinsos_premium.payments import publish_payment
    from perlinsos_shared.events import PaymentRecorded

    payment = PaymentRecorded(
        funding_line=line,
        period=period,
        amount_idr=amount,
        paid_on=date.fromisoformat(paid_on) if paid_on else today_local(),
        reference=reference,
        recorded_by=recorded_by,
    )
    event_id = asyncio.run(publish_payment(operator.operator_settings(), payment))
    console.print(
        f"payment {idr(amount)} for {line.value} {period} (ref {reference}) published, "
        f"event {event_id}"
    )


@finance_app.command("export")
def export(
    period: str = typer.Option(
        None,
        "--period",
        callback=operator.period,
        help="The month to export (YYYY-MM); this month if not given.",
    ),
    fmt: ExportFormat = typer.Option(ExportFormat.XLSX, "--format", help="The file format."),
    out: Path = typer.Option(
        None,
        "--out",
        help="For xlsx the file, for csv the directory; the current directory if not given.",
    ),
) -> None:
    """Export a month for finance: the summary per line and the participants per line.

    The files hold personal data (NIKs and names) and are written readable by their owner
    only."""
    from perlinsos_premium.export import file_stem, gather, write_csv, write_xlsx

    chosen = period or current_period()
    data = _with_pool(lambda pool: gather(pool, chosen, today_local()))
    if fmt is ExportFormat.XLSX:
        target = out or Path(f"{file_stem(chosen)}.xlsx")
        paths = [write_xlsx(data, target)]
    else:
        paths = write_csv(data, out or Path("."))
    for p in paths:
        console.print(f"written {p} (mode 0600)")
    console.print(
        f"[bold red]CONFIDENTIAL:[/bold red] these files hold NIKs and names; "
        f"total {idr(data.total('amount_idr'))} for {chosen}"
    )
