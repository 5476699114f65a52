"""The cohort at 1,000,000 (or any size): all published as a burst, as `make run` does, with
the time at which each further 100,000 were decided or refused, so that a slowdown as the
tables grow shows as a falling rate per 100,000."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from perlinsos_devruntime.agency import publish_submissions
from perlinsos_devruntime.cohort import Submission, generate_cohort
from perlinsos_shared.topics import DECISIONS, DELIVERIES, INTAKE_REJECTED

STEP = 100_000
TAG = "M"


def people(n: int, seed: int = 1_000_003) -> list[Submission]:
    """The synthetic cohort of `n` (3% faulty), request ids `AGENCY-M-n`, and 5000 added
    to the NIK serial of everyone clean (or duplicating someone clean), so that nobody
    duplicates a NIK of the launch cohort or of the latency runs (see latency.people)."""
    out = []
    for i, s in enumerate(generate_cohort(size=n, seed=seed, fault_rate=0.03)):
        rid = f"{s.agency}-{TAG}-{i + 1:07d}"
        data = {**s.data, "request_id": rid}
        if s.fault in (None, "DUPLICATE_NIK"):
            nik = data["nik"]
            data["nik"] = nik[:12] + f"{5000 + int(nik[12:]):04d}"
        out.append(replace(s, request_id=rid, data=data))
    return out


async def run_million(bootstrap: str, subs: list[Submission], timeout: float) -> dict[str, Any]:
    ours = {s.request_id for s in subs}
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=20000
    )
    await reader.start()
    parts = [
        TopicPartition(t.name, p)
        for t in (INTAKE_REJECTED, DECISIONS, DELIVERIES)
        for p in sorted(reader.partitions_for_topic(t.name) or ())
    ]
    reader.assign(parts)
    await reader.seek_to_end(*parts)
    settled: set[str] = set()
    sms_for: set[str] = set()  # decision ids of our people
    delivered: set[str] = set()
    marks: list[float] = []
    started = time.monotonic()
    publisher = asyncio.create_task(
        publish_submissions(bootstrap, ((s.agency, s.data["nik"], s.data) for s in subs))
    )
    published_s = 0.0
    decided_s = sms_s = 0.0
    try:
        while True:
            batches = await reader.getmany(timeout_ms=200, max_records=20000)
            for tp, records in batches.items():
                for r in records:
                    data = orjson.loads(r.value).get("data") or {}
                    if tp.topic == DELIVERIES.name:
                        delivered.add(str(data.get("decision_id")))
                        continue
                    rid = str(data.get("request_id"))
                    if rid not in ours:
                        continue
                    if tp.topic == DECISIONS.name and data.get("outcome") != "exited":
                        sms_for.add(str(data["decision_id"]))
                    if rid not in settled:
                        settled.add(rid)
                        if len(settled) % STEP == 0 or len(settled) == len(subs):
                            marks.append(time.monotonic() - started)
            if publisher.done() and not published_s:
                publisher.result()
                published_s = time.monotonic() - started
            if len(settled) == len(subs) and not decided_s:
                decided_s = time.monotonic() - started
            if decided_s and sms_for <= delivered:
                sms_s = time.monotonic() - started
                break
            if time.monotonic() - started > timeout:
                break
    finally:
        if not publisher.done():
            publisher.cancel()
        await reader.stop()
    rates = []
    prev = 0.0
    for i, at in enumerate(marks):
        n = min(STEP, len(subs) - i * STEP)
        rates.append(round(n / max(1e-9, at - prev)))
        prev = at
    return {
        "people": len(subs),
        "published_s": round(published_s, 1),
        "decided": len(settled),
        "decided_s": round(decided_s, 1) if decided_s else None,
        "sms_s": round(sms_s, 1) if sms_s else None,
        "sms_missing": len(sms_for - delivered),
        "per_100k_at_s": [round(x, 1) for x in marks],
        "per_100k_rate_per_s": rates,
        "last_to_first_rate": round(rates[-1] / rates[0], 2) if len(rates) > 1 else None,
        "timed_out": not decided_s or not sms_s,
    }
