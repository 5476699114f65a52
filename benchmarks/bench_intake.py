"""Intake rate: submissions per second through registry's validation and outbox.

Starts the embedded broker and PostgreSQL and the registry service alone, publishes a
synthetic cohort (3% faulty) to `registry.intake.v1` as agencies would, and times from
the first publish until registry has applied every submission and published every
resulting event (participants, rejections). Also times validation alone, in process.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from perlinsos_devruntime.agency import publish_submissions
from perlinsos_devruntime.cohort import generate_cohort
from perlinsos_devruntime.embedded import free_port
from perlinsos_devruntime.stack import Stack
from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.validation import check_enrolment
from perlinsos_shared.settings import Settings


def _validation_rate(subs: list[Any]) -> float:
    policy = AgencyPolicy.load()
    started = time.perf_counter()
    for s in subs:
        check_enrolment(s.data, f"agency/{s.agency}", policy)
    return len(subs) / (time.perf_counter() - started)


async def _through_registry(stack: Stack, subs: list[Any]) -> dict[str, float]:
    conn = await asyncpg.connect(stack.database_url)
    await conn.execute('SET search_path TO "registry"')
    try:
        started = time.perf_counter()
        await publish_submissions(
            stack.bootstrap_servers, ((s.agency, s.data["nik"], s.data) for s in subs)
        )
        published = time.perf_counter() - started
        while True:
            seen = await conn.fetchval("SELECT count(*) FROM inbox")
            unpublished = await conn.fetchval("SELECT count(*) FROM outbox_pending")
            if seen >= len(subs) and unpublished == 0:
                break
            await asyncio.sleep(0.05)
        total = time.perf_counter() - started
        participants = await conn.fetchval("SELECT count(*) FROM participants")
    finally:
        await conn.close()
    return {
        "publish_s": round(published, 2),
        "end_to_end_s": round(total, 2),
        "submissions_per_s": round(len(subs) / total),
        "participants": int(participants),
    }


def run(quick: bool) -> dict[str, float | int | str]:
    size = 2_000 if quick else 24_300
    subs = generate_cohort(size=size, seed=2025, fault_rate=0.03)
    figures: dict[str, float | int | str] = {
        "submissions": size,
        "validation_only_per_s": round(_validation_rate(subs)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(PERLINSOS_STATE_DIR=Path(tmp))
        stack = Stack(settings, kafka_port=free_port(), pg_port=free_port(), http_port_base=0)
        stack.start_infrastructure()
        try:
            stack.start_services(("registry",))
            figures.update(asyncio.run(_through_registry(stack, subs)))
        finally:
            stack.stop()
    return figures
