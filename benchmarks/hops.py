"""Where the time goes between an agency's publish and the SMS at the provider, per hop.

One steady-rate run as `make bench` does it (`benchmarks.latency`: the embedded stack,
notify sending to the Twilio-wire fake in a process of its own), then the trace store
(`<state>/traces/*.jsonl`) read back: for every submission the start of each service's
consumer span, of each relay's publish span and of the SMS send, and the percentiles of
the gaps between them.

    python -m benchmarks.hops --rate 200 --seconds 40 [--keep DIR]

A quicker loop than `make bench` while working on latency; the figures are the same kind.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
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


def measure(rate: float, seconds: float, base: Path) -> dict[str, Any]:
    from benchmarks.suite import _start_provider
    from perlinsos_devruntime.embedded import free_port
    from perlinsos_devruntime.stack import Stack
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
    )
    provider, url, sms_log = _start_provider(base)
    sent_at: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        stack.start_infrastructure()
        stack.start_services(extra_env=provider_env(url))
        started_s = time.monotonic() - t0
        figures = asyncio.run(
            latency.steady(
                stack.bootstrap_servers, people, rate, sms_log, max(120, 3 * seconds), sent_at
            )
        )
        time.sleep(6)  # the services' span processors export every 5 s
    finally:
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
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = measure(args.rate, args.seconds, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="perlinsos-hops-") as tmp:
            figures = measure(args.rate, args.seconds, Path(tmp))
    print(json.dumps(figures, indent=2))
    print(
        f"{args.rate:g}/s for {args.seconds:g}s: p50 {figures['p50_ms']} ms, p95 "
        f"{figures['p95_ms']} ms, p99 {figures['p99_ms']} ms; {figures['sms']}/"
        f"{figures['published']} SMS; last SMS {figures['last_sms_after_last_publish_s']} s "
        f"after the last publish; load {figures['load_average']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
