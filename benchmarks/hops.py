"""Where the time goes between an agency's publish and the SMS at the provider, per hop.

One steady-rate run as `make bench` does it (`benchmarks.latency`: the embedded stack,
notify sending to the Twilio-wire fake in a process of its own), then the trace store
(`<state>/traces/*.jsonl`) read back: for every submission the start of each service's
consumer span, of each relay's publish span and of the SMS send, and the percentiles of
the gaps between them.

    python -m benchmarks.hops --rate 200 --seconds 40 [--keep DIR] [--profile DIR]

A quicker loop than `make bench` while working on latency; the figures are the same kind,
with the CPU seconds of every process per 1,000 people over the run (the fake provider's
own and this process's, the agency and the SMS listener, counted apart: they are not part
of the system, but they share its cores) and per second at rest before it, and the WAL
bytes PostgreSQL wrote per person over the run. `--profile DIR` also samples every service
with py-spy while it runs (as `make profile` does for the cohort) and prints each one's top
costs; PostgreSQL is then started with `pg_stat_statements` and its top
statements are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import latency
from benchmarks.provider import env as provider_env

# (span kind, span name) -> step; a submission's steps in the order it passes them (the
# relays' publish spans exist only where the relay makes one per message)
STEPS = {
    ("CONSUMER", "registry.intake.v1 process"): "registry consumed",
    ("PRODUCER", "registry.participants.v1 publish"): "registry relayed",
    ("CONSUMER", "registry.participants.v1 process"): "eligibility consumed",
    ("PRODUCER", "eligibility.decisions.v1 publish"): "eligibility relayed",
    ("CONSUMER", "eligibility.decisions.v1 process"): "notify consumed",
    ("CLIENT", "sms send"): "sms send started",
}
OWNER = {"eligibility consumed": "eligibility", "notify consumed": "notify"}
IDLE_S = 10.0  # seconds at rest measured before publishing
ORDER = ["published", *dict.fromkeys(STEPS.values()), "at the provider"]


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        **{f"p{q}_ms": latency.ms(latency.percentile(values, q)) for q in (50, 95, 99)},
    }


def hops(
    traces: Path, phone_of_request: dict[str, str], sent_at: dict[str, float],
    arrived: dict[str, float],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Percentiles of each gap between consecutive steps, over every submission seen."""
    request_of_trace: dict[str, str] = {}
    firsts: dict[str, dict[str, float]] = defaultdict(dict)
    for path in sorted(traces.glob("*.jsonl")):
        service = path.stem
        with path.open("rb") as fh:
            for line in fh:
                rec = json.loads(line)
                step = STEPS.get((rec["kind"], rec["name"]))
                if step is None:
                    continue
                if OWNER.get(step, service) != service:
                    continue  # premium consumes the participants and decisions too
                trace_id = rec["trace_id"]
                rid = rec["attributes"].get("perlinsos.request_id")
                if step == "registry consumed" and rid:
                    request_of_trace[trace_id] = rid
                at = rec["start_ns"] / 1e9
                seen = firsts[trace_id]
                if step not in seen or at < seen[step]:
                    seen[step] = at
    gaps: dict[str, list[float]] = defaultdict(list)
    for trace_id, seen in firsts.items():
        phone = phone_of_request.get(request_of_trace.get(trace_id, ""))
        if phone is None or phone not in sent_at:
            continue
        steps = {**seen, "published": sent_at[phone]}
        if phone in arrived:
            steps["at the provider"] = arrived[phone]
        # between consecutive steps seen (traces without a relay's publish span skip it)
        for a, b in itertools.pairwise([s for s in ORDER if s in steps]):
            gaps[f"{a} -> {b}"].append(steps[b] - steps[a])
    names = [f"{a} -> {b}" for a, b in itertools.combinations(ORDER, 2)]
    return {k: _summary(gaps[k]) for k in names if k in gaps}


def measure(rate: float, seconds: float, base: Path, profile: Path | None = None) -> dict[str, Any]:
    from benchmarks import profile as profiling
    from benchmarks.sampler import cpu_seconds, own_cpu_seconds, postgres_wal, stack_pids
    from benchmarks.suite import _start_provider
    from perlinsos_devruntime import embedded
    from perlinsos_devruntime.embedded import free_port
    from perlinsos_devruntime.stack import EMBEDDED_TOPIC_PARTITIONS, Stack
    from perlinsos_shared.settings import Settings

    state = base / "state"
    os.environ["PERLINSOS_STATE_DIR"] = str(state)
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        os.environ.pop(var, None)
    n = max(1, round(rate * seconds))
    people = latency.people(n, 7000, tag=f"H{rate:g}", first_seq=0, nik_offset=1000)
    phone_of_request = {p.request_id: p.data["phone"] for p in people}
    stack = Stack(
        Settings(PERLINSOS_STATE_DIR=state),
        kafka_port=free_port(),
        pg_port=free_port(),
        http_port_base=0,
        topic_partitions=EMBEDDED_TOPIC_PARTITIONS,
    )
    if profile is not None:
        embedded.PG_SETTINGS = {
            **embedded.PG_SETTINGS,
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
        }
    provider, url, sms_log = _start_provider(base)
    sent_at: dict[str, float] = {}
    spies: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.monotonic()
        stack.start_infrastructure()
        stack.start_services(extra_env=provider_env(url))
        started_s = time.monotonic() - t0
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            spies = [
                profiling.spy(svc.process.pid, profile / f"{svc.name}.txt")
                for svc in stack.services
            ]
            time.sleep(1)  # attached before the first submission
        pids = {**stack_pids(stack), "provider (fake, apart)": provider.pid}
        # at rest first: what every process spends a second with nothing to do (polls,
        # relay and sender rounds, span export) is paid at any rate
        time.sleep(3)
        before = cpu_seconds(pids)
        time.sleep(IDLE_S)
        after = cpu_seconds(pids)
        figures_idle = {k: round((after[k] - before[k]) / IDLE_S, 4) for k in after if k in before}
        before = cpu_seconds(pids)
        wal_before = asyncio.run(postgres_wal(stack.database_url))["bytes"]
        mine = own_cpu_seconds()
        figures = asyncio.run(
            latency.steady(
                stack.bootstrap_servers, people, rate, sms_log, max(120, 3 * seconds), sent_at
            )
        )
        mine = own_cpu_seconds() - mine
        after = cpu_seconds(pids)
        wal_after = asyncio.run(postgres_wal(stack.database_url))["bytes"]
        cpu = {k: (after[k] - before[k]) * 1000 / n for k in after if k in before}
        cpu["all (provider apart)"] = sum(v for k, v in cpu.items() if not k.startswith("provider"))
        # the agency (signing, a span and a send per submission) and the SMS listener: this
        # process, on the same cores, apart from the system like the provider
        cpu["agency and listener (apart)"] = mine * 1000 / n
        figures["cpu_s_per_1000"] = {k: round(v, 3) for k, v in cpu.items()}
        figures["cpu_s_per_s_at_rest"] = figures_idle
        figures["wal_bytes_per_person"] = round((wal_after - wal_before) / n)
        if profile is not None:
            profiling.stop_spies(spies)
            statements = asyncio.run(profiling.top_statements(stack.database_url, 15))
            (profile / "postgres.tsv").write_text(
                "seconds\tcalls\trows\tmean_ms\tquery\n"
                + "".join("\t".join(str(v) for v in row) + "\n" for row in statements)
            )
        time.sleep(6)  # the services' span processors export every 5 s
    finally:
        profiling.stop_spies(spies)
        stack.stop()
        provider.terminate()
    figures["stack_started_s"] = round(started_s, 1)
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    figures["hops"] = hops(state / "traces", phone_of_request, sent_at, sms_log.arrived)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hops")
    parser.add_argument("--rate", type=float, default=200.0, help="submissions per second")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to publish")
    parser.add_argument("--keep", type=Path, help="keep the state (traces, logs) in this folder")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy every service into DIR while it runs"
    )
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = measure(args.rate, args.seconds, args.keep, args.profile)
    else:
        with tempfile.TemporaryDirectory(prefix="perlinsos-hops-") as tmp:
            figures = measure(args.rate, args.seconds, Path(tmp), args.profile)
    print(json.dumps(figures, indent=2))
    if args.profile is not None:
        from benchmarks import profile as profiling

        profiling.print_folder(args.profile, 15)
    print(
        f"{args.rate:g}/s for {args.seconds:g}s: p50 {figures['p50_ms']} ms, p95 "
        f"{figures['p95_ms']} ms, p99 {figures['p99_ms']} ms; {figures['sms']}/"
        f"{figures['published']} SMS; last SMS {figures['last_sms_after_last_publish_s']} s "
        f"after the last publish; load {figures['load_average']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
