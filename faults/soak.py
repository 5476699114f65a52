"""`make soak`: intake at a fixed rate for a set time, with faults now and then.

    uv run --frozen python -m faults.soak --rate 100 --minutes 10 --fault-every 90

Runs the supervised embedded stack (as `perlinsos up`), publishes submissions as the
agencies would at `--rate` per second for `--minutes`, and every `--fault-every` seconds
injects the next fault of the suite in turn (a service killed, PostgreSQL unreachable
for 10 s, the broker killed and restarted empty, PostgreSQL killed). Every 10 s it
samples each service's resident memory, consumer lag and outbox backlog from its
/metrics; it prints them at the start, the middle and the end, then drains (waits until
every submission is answered and every SMS handed over, up to `--drain-minutes`) and
prints the outcome counts.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from faults import cases
from faults.harness import Drive as _Counts
from faults.harness import (
    FaultRun,
    cohort,
    fingerprint,
    metrics_text,
    publish,
    resubmit_unanswered,
)

SAMPLE_EVERY_S = 10.0

OneFault = Callable[[FaultRun, asyncio.Event], Coroutine[Any, Any, int]]


def _rotation() -> list[tuple[str, OneFault]]:
    async def one_service(run: FaultRun, done: asyncio.Event) -> int:
        return await cases.kill_random_services(run, done, every_s=0.0, at_least=1)

    async def pg_cut(run: FaultRun, done: asyncio.Event) -> int:
        return await cases.cut_postgres(run, done, at_s=0.0, for_s=10.0)

    async def broker(run: FaultRun, done: asyncio.Event) -> int:
        return await cases.kill_broker(run, done, at_s=0.0)

    async def pg_kill(run: FaultRun, done: asyncio.Event) -> int:
        return await cases.kill_postgres(run, done, at_s=0.0)

    return [
        ("service killed", one_service),
        ("PostgreSQL unreachable 10 s", pg_cut),
        ("broker killed, restarted empty", broker),
        ("PostgreSQL killed", pg_kill),
    ]


@dataclass
class Sample:
    at_s: float
    rss_mb: dict[str, float] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)


_RSS = re.compile(r"^process_resident_memory_bytes(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)
_LAG = re.compile(r"^perlinsos_consumer_lag\w*(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)
_BACKLOG = re.compile(r"^perlinsos_outbox_backlog\w*(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)


def sample(run: FaultRun, at_s: float) -> Sample:
    out = Sample(at_s)
    for svc in list(run.stack.services):
        text = metrics_text(svc.health_url)
        if not text:
            continue  # restarting: no figure this time
        if m := _RSS.search(text):
            out.rss_mb[svc.name] = float(m.group(1)) / 2**20
        out.lag[svc.name] = int(sum(float(x) for x in _LAG.findall(text)))
        if m := _BACKLOG.search(text):
            out.backlog[svc.name] = int(float(m.group(1)))
    return out


def _print_samples(console: Console, samples: list[Sample]) -> None:
    if not samples:
        return
    picks = {"start": samples[0], "middle": samples[len(samples) // 2], "end": samples[-1]}
    table = Table(title="soak: per service at start, middle and end of the intake")
    for col in ("service", "when", "t (s)", "resident MB", "consumer lag", "outbox backlog"):
        table.add_column(col, justify="right" if col != "service" else "left")
    for name in ("registry", "eligibility", "premium", "notify"):
        for when, s in picks.items():
            table.add_row(
                name,
                when,
                f"{s.at_s:.0f}",
                f"{s.rss_mb[name]:.0f}" if name in s.rss_mb else "-",
                f"{s.lag[name]:,}" if name in s.lag else "-",
                f"{s.backlog[name]:,}" if name in s.backlog else "-",
            )
    console.print(table)


async def soak(rate: float, minutes: float, fault_every: float, drain_minutes: float,
               base: Path, console: Console) -> int:  # fmt: skip
    total = int(rate * minutes * 60)
    console.print(f"generating {total:,} submissions...")
    subs = cohort(total, seed=7)
    by_key = {(s.agency, s.request_id): s for s in subs}
    sent_at: dict[tuple[str, str], float] = {}
    counts = _Counts()
    samples: list[Sample] = []
    injected: list[str] = []
    rotation = _rotation()
    async with FaultRun(base) as run:
        console.print(f"stack up; intake at {rate:g}/s for {minutes:g} min, a fault every "
                      f"{fault_every:g} s")  # fmt: skip
        started = time.monotonic()
        next_sample, next_fault = started, started + fault_every
        faults: list[asyncio.Task[int]] = []
        step = max(1, round(rate / 4))
        for n in range(0, total, step):
            due = started + n / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            chunk = subs[n : n + step]
            await publish(run.bootstrap, chunk, timeout=5)
            now = time.monotonic()
            for s in chunk:
                sent_at[(s.agency, s.request_id)] = now
            counts.published += len(chunk)
            if now >= next_sample:
                samples.append(await asyncio.to_thread(sample, run, now - started))
                next_sample = now + SAMPLE_EVERY_S
            if now >= next_fault:
                name, inject = rotation[len(injected) % len(rotation)]
                injected.append(name)
                console.print(f"[yellow]t={now - started:.0f}s fault: {name}[/yellow]")
                done = asyncio.Event()
                done.set()
                faults.append(asyncio.create_task(inject(run, done)))
                next_fault = now + fault_every
        intake_s = time.monotonic() - started
        samples.append(await asyncio.to_thread(sample, run, intake_s))
        for task in faults:
            counts.injections += await task
        _print_samples(console, samples)

        console.print(f"intake done: {counts.published:,} in {intake_s:.0f}s; draining...")
        drain_deadline = time.monotonic() + drain_minutes * 60
        while time.monotonic() < drain_deadline:
            await resubmit_unanswered(run, by_key, sent_at, counts)
            end = await fingerprint(run)
            answered = sum(end.submissions.values())
            decided = sum(end.decisions.values())
            if answered >= total and sum(end.sms.values()) >= decided and run.settled_services():
                break
            await asyncio.sleep(5)
        end = await fingerprint(run)
        restarts = run.stack.restarts()
        final = await asyncio.to_thread(sample, run, time.monotonic() - started)
    summary = Table(title=f"soak outcome: {rate:g}/s for {minutes:g} min")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for what, value in [
        ("submissions published", counts.published),
        ("resubmitted (no answer after 45 s)", counts.resubmitted),
        ("answered (accepted or refused)", sum(end.submissions.values())),
        ("participants", sum(end.participants.values())),
        ("decisions", sum(end.decisions.values())),
        ("ledger rows", sum(end.ledger.values())),
        ("SMS handed over", sum(end.sms.values())),
        ("SMS handed over twice", end.sms_repeated),
        ("faults injected", counts.injections),
    ]:
        summary.add_row(what, f"{value:,}")
    summary.add_row("faults, in turn", ", ".join(injected) or "-")
    summary.add_row("restarts", ", ".join(f"{k} {v}" for k, v in restarts.items() if v) or "0")
    summary.add_row(
        "after draining: resident MB",
        ", ".join(f"{k} {v:.0f}" for k, v in final.rss_mb.items()),
    )
    summary.add_row(
        "after draining: consumer lag", ", ".join(f"{k} {v}" for k, v in final.lag.items())
    )
    console.print(summary)
    lost = total - sum(end.submissions.values())
    return 0 if lost == 0 and end.sms_repeated == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rate", type=float, default=100.0, help="submissions per second")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the intake runs")
    parser.add_argument("--fault-every", type=float, default=90.0, help="seconds between faults")
    parser.add_argument("--drain-minutes", type=float, default=10.0,
                        help="how long to wait for the backlog after the intake")  # fmt: skip
    args = parser.parse_args()
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="perlinsos-soak-") as base:
        code = asyncio.run(
            soak(args.rate, args.minutes, args.fault_every, args.drain_minutes, Path(base), console)
        )
    raise SystemExit(code)


if __name__ == "__main__":
    main()
