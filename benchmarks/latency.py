"""Latency at a steady rate: from an agency's publish to the SMS handed to the provider.

Submissions are published as an agency does (signed CloudEvents, one trace each) in
chunks every 50 ms at `rate` per second for `seconds`; each has a phone number of its
own, so the provider's line for that number (see `benchmarks.provider`) names the
submission. The latency of one submission is the provider's wall-clock time of arrival
minus the time its chunk was published.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from perlinsos_devruntime.cohort import Submission, generate_cohort
from perlinsos_shared import intake_client

TICK_S = 0.05
QUIET_S = 30.0  # after the last publish: give up when no SMS came for this long


def people(n: int, seed: int, tag: str, first_seq: int, nik_offset: int) -> list[Submission]:
    """`n` clean submissions with request ids `AGENCY-<tag>-n`, phone `+62812<seq>` each,
    and `nik_offset` added to every NIK serial. The generator's serials are unique within
    one cohort and small (the launch cohort's are below 1000), so runs given offsets
    1000 apart never duplicate a NIK of another."""
    out = []
    for i, s in enumerate(generate_cohort(size=n, seed=seed, fault_rate=0.0)):
        seq = first_seq + i
        rid = f"{s.agency}-{tag}-{i + 1:07d}"
        nik = s.data["nik"][:12] + f"{nik_offset + int(s.data['nik'][12:]):04d}"
        data = {**s.data, "request_id": rid, "phone": phone(seq), "nik": nik}
        out.append(replace(s, request_id=rid, data=data))
    return out


def phone(seq: int) -> str:
    return f"+62812{seq:08d}"


@dataclass
class ProviderLog:
    """Tails the provider's file: the first arrival time of each phone number."""

    path: Path
    _offset: int = 0
    _rest: str = ""

    def __post_init__(self) -> None:
        self.arrived: dict[str, float] = {}

    def read(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open(encoding="utf-8") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
            self._offset = fh.tell()
        text = self._rest + chunk
        lines = text.split("\n")
        self._rest = lines.pop()
        for line in lines:
            to, _, at = line.partition("\t")
            self.arrived.setdefault(to, float(at))
        return len(lines)


def ms(seconds: float) -> int | None:
    return None if math.isnan(seconds) else round(seconds * 1000)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def steady(
    bootstrap: str,
    subs: Sequence[Submission],
    rate: float,
    log: ProviderLog,
    drain_timeout: float = 600,
    sent_at: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Publish at `rate`, then wait until every SMS arrived, none came for `QUIET_S`, or
    `drain_timeout` passed. `sent_at`, when given, is filled with each phone number's
    moment of publishing."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    sent_at = {} if sent_at is None else sent_at
    started = time.monotonic()
    wall0 = time.time()
    try:
        k = 0
        done = 0
        while done < len(subs):
            due = started + k * TICK_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            upto = min(len(subs), round((k + 1) * TICK_S * rate))
            chunk = subs[done:upto]
            k += 1
            if not chunk:
                continue
            stamp = time.time()
            await intake_client.publish_submissions(
                producer, ((s.agency, s.data["nik"], s.data) for s in chunk)
            )
            for s in chunk:
                sent_at[s.data["phone"]] = stamp
            done = upto
            log.read()
    finally:
        await producer.stop()
    last_publish = time.time()
    publish_s = last_publish - wall0
    last_change = time.monotonic()
    deadline = time.monotonic() + drain_timeout
    seen = 0
    while time.monotonic() < deadline:
        log.read()
        now_seen = sum(1 for p in sent_at if p in log.arrived)
        if now_seen != seen:
            seen, last_change = now_seen, time.monotonic()
        if seen >= len(sent_at) or time.monotonic() - last_change > QUIET_S:
            break
        await asyncio.sleep(0.2)
    return summarise(sent_at, log.arrived, rate, publish_s, last_publish)


def summarise(
    sent_at: dict[str, float],
    arrived: dict[str, float],
    rate: float,
    publish_s: float,
    last_publish: float,
) -> dict[str, Any]:
    pairs = sorted((t, arrived[p] - t) for p, t in sent_at.items() if p in arrived)
    lat = [d for _, d in pairs]
    fifths: list[dict[str, int | None]] = []
    if pairs:
        t0 = pairs[0][0]
        span = max(1e-9, pairs[-1][0] - t0)
        for w in range(5):
            part = [d for t, d in pairs if min(4, int((t - t0) / span * 5)) == w]
            fifths.append({"p50_ms": ms(percentile(part, 50)), "p99_ms": ms(percentile(part, 99))})
    last_sms = max((arrived[p] for p in sent_at if p in arrived), default=last_publish)
    return {
        "rate_per_s": rate,
        "published": len(sent_at),
        "published_rate_per_s": round(len(sent_at) / publish_s, 1) if publish_s else 0,
        "publish_s": round(publish_s, 1),
        "sms": len(lat),
        "p50_ms": ms(percentile(lat, 50)),
        "p95_ms": ms(percentile(lat, 95)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(max(lat, default=float("nan"))),
        "last_sms_after_last_publish_s": round(last_sms - last_publish, 2),
        "by_fifth": fifths,
    }
