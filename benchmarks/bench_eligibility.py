"""Eligibility decisions per second: the criteria alone, and through the service.

Builds `ParticipantEnrolled` events from the synthetic launch cohort (clean people only),
starts the embedded broker and PostgreSQL and eligibility alone (one instance, then two
in one consumer group), publishes the events to `registry.participants.v1` and times from
the first publish until every event is applied and every decision published. Also times
`assess` (the pure criteria) in process.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from perlinsos_devruntime.cohort import generate_cohort
from perlinsos_devruntime.embedded import free_port
from perlinsos_devruntime.stack import Stack
from perlinsos_eligibility.domain import Applicant, assess
from perlinsos_eligibility.rules import load_rule_book
from perlinsos_shared.clock import now_local, today_local
from perlinsos_shared.envelope import encode, make_event
from perlinsos_shared.events import Address, Occupation, ParticipantEnrolled
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import PARTICIPANTS


def _events(size: int) -> list[ParticipantEnrolled]:
    subs = [s for s in generate_cohort(size=size, seed=2025, fault_rate=0.0) if not s.fault]
    now = now_local()
    return [
        ParticipantEnrolled(
            participant_id=str(uuid.uuid4()),
            nik=s.data["nik"],
            full_name=s.data["full_name"],
            birth_date=date.fromisoformat(s.data["birth_date"]),
            sex=s.data["sex"],
            phone_e164="+6281234567890",
            address=Address.model_validate(s.data["address"]),
            occupation=Occupation(s.data["occupation"]),
            existing_bpjs_tk=False,
            agency=s.agency,
            request_id=s.request_id,
            enrolled_at=now,
        )
        for s in subs
    ]


def _assess_rate(events: list[ParticipantEnrolled]) -> float:
    book = load_rule_book()
    today = today_local()
    started = time.perf_counter()
    for e in events:
        assess(Applicant(e.birth_date, e.address, e.occupation, e.existing_bpjs_tk), book, today)
    return len(events) / (time.perf_counter() - started)


async def _through_service(stack: Stack, events: list[ParticipantEnrolled]) -> dict[str, float]:
    values = [encode(make_event("bench/registry", e, subject=e.participant_id)) for e in events]
    conn = await asyncpg.connect(stack.database_url)
    await conn.execute('SET search_path TO "eligibility"')
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap_servers, linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [
            await producer.send(PARTICIPANTS.name, v, key=e.participant_id.encode())
            for e, v in zip(events, values, strict=True)
        ]
        await asyncio.gather(*pending)
        while True:
            decided = await conn.fetchval("SELECT count(*) FROM decisions")
            unpublished = await conn.fetchval("SELECT count(*) FROM outbox_pending")
            if decided >= len(events) and unpublished == 0:
                break
            await asyncio.sleep(0.05)
        total = time.perf_counter() - started
        eligible = await conn.fetchval("SELECT sum(holders) FROM line_places")
    finally:
        await producer.stop()
        await conn.close()
    return {
        "end_to_end_s": round(total, 2),
        "decisions_per_s": round(len(events) / total),
        "eligible": int(eligible or 0),
    }


def _run_stack(instances: int, events: list[ParticipantEnrolled]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(PERLINSOS_STATE_DIR=Path(tmp))
        stack = Stack(settings, kafka_port=free_port(), pg_port=free_port(), http_port_base=0)
        stack.start_infrastructure()
        try:
            stack.start_services(("eligibility",) * instances)
            return asyncio.run(_through_service(stack, events))
        finally:
            stack.stop()


def run(quick: bool) -> dict[str, float | int | str]:
    events = _events(2_000 if quick else 24_300)
    figures: dict[str, float | int | str] = {
        "participants": len(events),
        "assess_only_per_s": round(_assess_rate(events)),
    }
    for instances in (1, 2):
        for k, v in _run_stack(instances, events).items():
            figures[f"{instances}_instance_{k}"] = v
    return figures
