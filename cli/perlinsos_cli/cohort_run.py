"""`make run`: the synthetic 24,300 cohort through the whole stack, with a per-line report."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perlinsos_devruntime.agency import Listener, Outcomes, by_line, publish_submissions
from perlinsos_devruntime.cohort import FUNDING_LINE_BY_OCCUPATION, Submission, generate_cohort
from perlinsos_premium.queries import liability_by_line
from perlinsos_shared.clock import current_period
from perlinsos_shared.db import create_pool
from perlinsos_shared.events import FundingLine


@dataclass
class LineReport:
    line: str
    submitted: int
    enrolled: int
    eligible: int
    waitlisted: int
    refused: dict[str, int]
    liability_idr: int
    ledger_idr: int
    billed: int
    sms: int


@dataclass
class CohortReport:
    period: str
    lines: list[LineReport]
    seconds_to_decided: float
    seconds_to_sms: float
    seconds_total: float


def idr(amount: int) -> str:
    return "Rp" + f"{amount:,}".replace(",", ".")


async def run_cohort(
    bootstrap: str,
    database_url: str,
    subs: list[Submission],
    console: Console,
    timeout: float = 600,
) -> CohortReport:
    keys = {(s.agency, s.request_id) for s in subs}
    lines = by_line(
        ((s.agency, s.request_id), FUNDING_LINE_BY_OCCUPATION[s.data["occupation"]]) for s in subs
    )
    listener = Listener(bootstrap)
    await listener.start()
    started = time.monotonic()
    period = current_period()
    o = listener.outcomes
    o.watch(keys)
    try:
        with Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            t_pub = progress.add_task("published to intake", total=len(subs))
            t_dec = progress.add_task("decided or refused", total=len(subs))
            t_sms = progress.add_task("SMS handed to provider", total=None)

            publisher = asyncio.create_task(
                publish_submissions(
                    bootstrap,
                    ((s.agency, str(s.data.get("nik", "")), s.data) for s in subs),
                    on_sent=lambda n: progress.advance(t_pub, n),
                )
            )
            decided_at = sms_at = 0.0
            deadline = started + timeout
            while True:
                await listener.poll()
                settled = o.settled(o.watched)
                progress.update(t_dec, completed=settled)
                our_decisions = o.decision_ids()
                delivered = o.delivered(our_decisions)
                progress.update(t_sms, completed=delivered, total=len(our_decisions) or None)
                if publisher.done():
                    publisher.result()
                if settled == len(keys) and not decided_at:
                    decided_at = time.monotonic() - started
                if decided_at and delivered == len(our_decisions):
                    sms_at = time.monotonic() - started
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"after {timeout:.0f}s: {settled}/{len(keys)} decided, "
                        f"{delivered}/{len(our_decisions)} SMS"
                    )
        ledger = await _wait_for_summaries(listener, database_url, period, deadline)
    finally:
        await listener.stop()
    total = time.monotonic() - started
    return CohortReport(
        period=period,
        lines=[
            _line_report(line.value, lines.get(line.value, set()), o, period, ledger)
            for line in FundingLine
        ],
        seconds_to_decided=decided_at,
        seconds_to_sms=sms_at,
        seconds_total=total,
    )


async def _wait_for_summaries(
    listener: Listener, database_url: str, period: str, deadline: float
) -> dict[str, dict[str, int]]:
    """Until the latest summary per line equals premium's ledger for the period."""
    pool = await create_pool(database_url, "premium", max_size=1)
    try:
        while True:
            await listener.poll()
            ledger = await liability_by_line(pool, period)
            published = {
                line: s["amount_idr"]
                for (line, p), s in listener.outcomes.summaries.items()
                if p == period
            }
            if all(published.get(line) == v["amount_idr"] for line, v in ledger.items()):
                return ledger
            if time.monotonic() > deadline:
                return ledger
            await asyncio.sleep(0.1)
    finally:
        await pool.close()


def _line_report(
    line: str,
    keys: set[tuple[str, str]],
    o: Outcomes,
    period: str,
    ledger: dict[str, dict[str, int]],
) -> LineReport:
    decisions = [o.decisions[k] for k in keys if k in o.decisions]
    summary: dict[str, Any] = o.summaries.get((line, period), {})
    return LineReport(
        line=line,
        submitted=len(keys),
        enrolled=len(decisions),
        eligible=sum(1 for d in decisions if d["outcome"] == "eligible"),
        waitlisted=sum(1 for d in decisions if d["outcome"] == "waitlisted"),
        refused=dict(sorted(o.reasons_by(keys).items())),
        liability_idr=int(summary.get("amount_idr", 0)),
        ledger_idr=ledger.get(line, {}).get("amount_idr", 0),
        billed=int(summary.get("participants", 0)),
        sms=sum(1 for d in decisions if o.deliveries.get(d["decision_id"]) == "accepted"),
    )


def print_report(report: CohortReport, console: Console) -> None:
    table = Table(title=f"perlinsos: the cohort per funding line, liability for {report.period}")
    table.add_column("funding line")
    for col in ("submitted", "enrolled", "eligible", "waitlisted", "refused", "billed"):
        table.add_column(col, justify="right")
    table.add_column(f"liability {report.period}", justify="right")
    table.add_column("ledger", justify="right")
    table.add_column("SMS handed over", justify="right")
    for r in report.lines:
        table.add_row(
            r.line,
            f"{r.submitted:,}",
            f"{r.enrolled:,}",
            f"{r.eligible:,}",
            f"{r.waitlisted:,}",
            f"{r.submitted - r.eligible - r.waitlisted:,}",
            f"{r.billed:,}",
            idr(r.liability_idr),
            "= summary" if r.ledger_idr == r.liability_idr else f"≠ {idr(r.ledger_idr)}",
            f"{r.sms:,}",
        )
    lines = report.lines
    table.add_row(
        "TOTAL",
        f"{sum(r.submitted for r in lines):,}",
        f"{sum(r.enrolled for r in lines):,}",
        f"{sum(r.eligible for r in lines):,}",
        f"{sum(r.waitlisted for r in lines):,}",
        f"{sum(r.submitted - r.eligible - r.waitlisted for r in lines):,}",
        f"{sum(r.billed for r in lines):,}",
        idr(sum(r.liability_idr for r in lines)),
        "",
        f"{sum(r.sms for r in lines):,}",
        style="bold",
    )
    console.print(table)

    codes = sorted({code for r in lines for code in r.refused})
    reasons = Table(title="refused, by reason code (a submission may carry several)")
    reasons.add_column("reason")
    for r in lines:
        reasons.add_column(r.line, justify="right")
    for code in codes:
        reasons.add_row(code, *(str(r.refused.get(code, 0)) for r in lines))
    if codes:
        console.print(reasons)
    console.print(
        f"all {sum(r.submitted for r in lines):,} decided or refused after "
        f"{report.seconds_to_decided:.1f}s; every SMS handed over after "
        f"{report.seconds_to_sms:.1f}s; summaries equal the ledger after "
        f"{report.seconds_total:.1f}s"
    )


def generate(size: int, seed: int, fault_rate: float) -> list[Submission]:
    return generate_cohort(size=size, seed=seed, fault_rate=fault_rate)
