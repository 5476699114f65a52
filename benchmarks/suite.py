"""`make bench`: every figure of docs/benchmarks.md in one run, on one embedded stack.

In order, on one broker and one PostgreSQL: the floor (N events through 4 bare hops), the
cohort of N end to end (as `make run`: every SMS to the file sink) with CPU seconds per
process, latency at steady rates (notify started again with the fake Twilio-wire provider),
optionally the cohort at 1,000,000 and the plans of the hot statements, then the month
close of 1,000,000 in a database of its own on the same server. Resident memory of every
service is sampled throughout. Then the stack stops and `perlinsos up` is timed on its own.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from rich.console import Console

from benchmarks import explain, latency, machine, million
from benchmarks.floor import run_floor
from benchmarks.provider import env as provider_env
from benchmarks.sampler import Sampler, cpu_seconds, own_cpu_seconds, postgres_wal, stack_pids
from perlinsos_cli.cohort_run import generate, run_cohort
from perlinsos_devruntime.embedded import free_port
from perlinsos_devruntime.stack import EMBEDDED_TOPIC_PARTITIONS, SERVICES, Stack
from perlinsos_shared.gc_tuning import tune_gc
from perlinsos_shared.intake_client import submission_event
from perlinsos_shared.settings import Settings


@dataclass
class Options:
    size: int = 24_300
    latency_s: float = 120.0
    rates: tuple[float, ...] = (200.0, 1000.0)
    close_size: int = 1_000_000
    startups: int = 3
    million: int = 0  # 0: not run
    two_instances: bool = False
    timeout: float = 1800.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(opts: Options) -> dict[str, Any]:
    # the month close logs budget thresholds crossed: not a figure
    logging.getLogger("perlinsos").setLevel(logging.ERROR)
    results: dict[str, Any] = {"machine": machine.describe(), "options": opts.__dict__.copy()}
    log(f"machine: {results['machine']}")
    subs = generate(opts.size, 2025, 0.03)
    with tempfile.TemporaryDirectory(prefix="perlinsos-bench-") as tmp:
        state = Path(tmp) / "state"
        os.environ["PERLINSOS_STATE_DIR"] = str(state)
        for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
            os.environ.pop(var, None)
        settings = Settings(PERLINSOS_STATE_DIR=state)
        stack = Stack(
            settings,
            kafka_port=free_port(),
            pg_port=free_port(),
            http_port_base=0,
            topic_partitions=EMBEDDED_TOPIC_PARTITIONS,
        )
        stack.start_infrastructure()
        sampler = Sampler(stack)
        provider: subprocess.Popen[str] | None = None
        try:
            if opts.million:
                explain.enable_statements(stack)
            results["machine"].update(_server_versions(stack))
            sampler.phase = "floor"
            log(f"floor: {opts.size:,} events through 4 hops")
            events = [submission_event(s.agency, s.data) for s in subs]
            keys = [str(s.data.get("nik", "")).encode() for s in subs]
            results["floor"] = run_floor(
                stack.bootstrap_servers,
                stack.database_url,
                events,
                keys,
                run="a",
                partitions=EMBEDDED_TOPIC_PARTITIONS,
            )
            log(f"floor: {results['floor']}")

            stack.start_services()
            sampler.start()
            sampler.phase = "cohort"
            results["cohort"] = _cohort(stack, subs, opts.timeout)
            results["cohort_to_floor"] = round(
                results["floor"]["seconds"] / results["cohort"]["sms_s"], 3
            )
            log(f"cohort: {results['cohort']}")

            results["latency"] = {}
            if opts.rates:  # the steady runs hand every SMS to the Twilio-wire provider
                provider, url, sms_log = _start_provider(Path(tmp))
                sampler.phase = None  # no samples while notify starts again
                notify = next(s for s in stack.services if s.name == "notify")
                stack.stop_service(notify)
                stack.start_services(("notify",), extra_env=provider_env(url))
            seq = 0
            for i, rate in enumerate(opts.rates):
                n = max(1, round(rate * opts.latency_s))
                people = latency.people(
                    n, 7000 + i, tag=f"L{rate:g}", first_seq=seq, nik_offset=1000 * (i + 1)
                )
                seq += n
                sampler.phase = f"latency {rate:g}/s"
                log(f"latency: {n:,} at {rate:g}/s")
                before = cpu_seconds(stack_pids(stack))
                figures = asyncio.run(
                    latency.steady(
                        stack.bootstrap_servers, people, rate, sms_log, max(60, opts.latency_s)
                    )
                )
                after = cpu_seconds(stack_pids(stack))
                figures["cpu_s_per_1000"] = {
                    k: round((after[k] - before[k]) * 1000 / n, 3) for k in after if k in before
                }
                results["latency"][f"{rate:g}"] = figures
                log(f"latency {rate:g}/s: {figures}")

            try:  # a figure to read, not a target: a failure here must not lose the rest
                results["tables"] = asyncio.run(explain.scans(stack.database_url, larger_than=1000))
            except Exception as exc:
                log(f"table sizes not read: {exc!r}")

            if opts.million:
                results["million"] = _million(stack, opts, sampler, provider)

            sampler.phase = "month close"
            log(f"month close of {opts.close_size:,}")
            results["close"] = asyncio.run(_close(stack.database_url, opts.close_size))
            log(f"month close: {results['close']}")
        finally:
            sampler.stop()
            if provider is not None:
                provider.terminate()
                provider.wait(10)
            stack.stop()
        results["memory"] = sampler.summary()
    results["startup"] = startup(opts.startups)
    log(f"startup: {results['startup']}")
    if opts.two_instances:
        results["two_instances"] = two_instances(subs, opts.timeout)
    results["machine"]["load_at_end"] = machine.load_now()
    return results


def _server_versions(stack: Stack) -> dict[str, str]:
    async def pg() -> str:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    broker = "-"
    if stack.kafka is not None and stack.kafka.pid is not None:
        cmd = psutil.Process(stack.kafka.pid).cmdline()
        broker = Path(cmd[0]).name if cmd else "-"
    return {"postgresql": asyncio.run(pg()), "broker": broker}


def _cohort(stack: Stack, subs: list[Any], timeout: float) -> dict[str, Any]:
    """The cohort as `make run` runs it, with CPU seconds per process over the run."""
    tune_gc()
    before = cpu_seconds(stack_pids(stack))
    mine = own_cpu_seconds()
    report = asyncio.run(
        run_cohort(
            stack.bootstrap_servers,
            stack.logins.reader,
            subs,
            Console(file=io.StringIO()),
            timeout=timeout,
        )
    )
    after = cpu_seconds(stack_pids(stack))
    cpu = {k: round(after[k] - before[k], 2) for k in after if k in before}
    cpu["bench (agency + listener)"] = round(own_cpu_seconds() - mine, 2)
    n = len(subs)
    return {
        "size": n,
        "decided_s": round(report.seconds_to_decided, 2),
        "sms_s": round(report.seconds_to_sms, 2),
        "settled_s": round(report.seconds_total, 2),
        "people_per_s": round(n / report.seconds_to_sms),
        "cpu_s": cpu,
        "cpu_s_per_1000": {k: round(v * 1000 / n, 3) for k, v in cpu.items()},
        "sms_handed_over": sum(r.sms for r in report.lines),
        "decided": sum(r.enrolled for r in report.lines),
    }


def _start_provider(tmp: Path) -> tuple[subprocess.Popen[str], str, latency.ProviderLog]:
    out = tmp / "sms-arrivals.tsv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.provider", "--out", str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = json.loads(proc.stdout.readline())["url"]
    return proc, url, latency.ProviderLog(out)


def _million(
    stack: Stack, opts: Options, sampler: Sampler, provider: subprocess.Popen[str] | None
) -> dict[str, Any]:
    """The cohort at `opts.million`, with CPU seconds per process over the run: the stack's,
    the Twilio-wire provider's (when the steady runs started it) and this process's own
    (the agency publishing, the listener), all on the same cores."""
    log(f"million: generating {opts.million:,}")
    people = million.people(opts.million)
    asyncio.run(explain.reset_statements(stack.database_url))
    sampler.phase = "million"
    log("million: publishing and waiting")
    pids = stack_pids(stack)
    if provider is not None:
        pids["provider (fake, apart)"] = provider.pid
    wal_before = asyncio.run(postgres_wal(stack.database_url))
    before, mine = cpu_seconds(pids), own_cpu_seconds()
    figures = asyncio.run(million.run_million(stack.bootstrap_servers, people, opts.timeout))
    after, mine = cpu_seconds(pids), own_cpu_seconds() - mine
    wal_after = asyncio.run(postgres_wal(stack.database_url))
    figures["wal"] = {k: wal_after[k] - wal_before[k] for k in wal_after}
    cpu = {k: round(after[k] - before[k], 1) for k in after if k in before}
    cpu["bench (agency + listener)"] = round(mine, 1)
    wall = figures.get("sms_s") or figures.get("decided_s") or opts.timeout
    figures["cpu_s"] = cpu
    figures["cpu_s_per_1000"] = {k: round(v * 1000 / len(people), 3) for k, v in cpu.items()}
    figures["cores_busy"] = round(sum(cpu.values()) / wall, 2)
    del people
    log(f"million: {figures}")
    figures["hot_statements"] = asyncio.run(explain.hot_plans(stack.database_url))
    figures["large_tables"] = asyncio.run(explain.scans(stack.database_url))
    return figures


async def _close(admin_url: str, n: int) -> dict[str, Any]:
    """Month close on a database of its own on the same server (as the premium bench)."""
    from benchmarks.bench_premium import close_figures

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("DROP DATABASE IF EXISTS bench_close")
        await conn.execute("CREATE DATABASE bench_close")
    finally:
        await conn.close()
    return await close_figures(admin_url.rsplit("/", 1)[0] + "/bench_close", n)


def startup(times: int) -> dict[str, Any]:
    """Seconds from `perlinsos up` until it says every service is ready: once on a fresh
    state directory (PostgreSQL's initdb included), then `times - 1` more on the same one."""
    if times < 1:
        return {}
    runs: list[float] = []
    timeline = ""
    with tempfile.TemporaryDirectory(prefix="perlinsos-bench-up-") as tmp:
        for _ in range(times):
            runs.append(_up_once(Path(tmp)))
            # each step of the start (the stack writes it once every service is ready)
            log_file = Path(tmp) / "logs" / "startup.log"
            timeline = log_file.read_text() if log_file.exists() else ""
    again = runs[1:]
    return {
        "fresh_s": round(runs[0], 1),
        "again_s": [round(x, 1) for x in again],
        "again_median_s": round(statistics.median(again), 1) if again else None,
        "last_timeline": timeline.splitlines(),
    }


def _up_once(state: Path) -> float:
    env = {**os.environ, "PERLINSOS_STATE_DIR": str(state), "COLUMNS": "200"}
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        env.pop(var, None)
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perlinsos_cli.main",
            "up",
            "--kafka-port",
            str(free_port()),
            "--pg-port",
            str(free_port()),
            "--http-port",
            str(_port_block()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "ready in" in line:
                return time.monotonic() - started
            if time.monotonic() - started > 300:
                break
        raise RuntimeError("perlinsos up did not become ready:\n" + "".join(seen[-30:]))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _port_block() -> int:
    from perlinsos_devruntime.embedded import free_port_block

    return free_port_block(len(SERVICES))


def two_instances(subs: list[Any], timeout: float) -> dict[str, Any]:
    """The cohort again on a fresh stack with two instances of every service."""
    with tempfile.TemporaryDirectory(prefix="perlinsos-bench-2x-") as tmp:
        state = Path(tmp) / "state"
        os.environ["PERLINSOS_STATE_DIR"] = str(state)
        stack = Stack(
            Settings(PERLINSOS_STATE_DIR=state),
            kafka_port=free_port(),
            pg_port=free_port(),
            http_port_base=0,
        )
        stack.start_infrastructure()
        try:
            stack.start_services(SERVICES + SERVICES)
            log("two instances: cohort")
            figures = _cohort(stack, subs, timeout)
        finally:
            stack.stop()
    log(f"two instances: {figures}")
    return figures
