"""Notify test plumbing: decisions as eligibility sends them, the notify schema on the
test's PostgreSQL, a fake Twilio, and a way to run a sender until something holds."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from perlinsos_devruntime.fake_twilio import FakeTwilio
from perlinsos_notify.handlers import make_handler
from perlinsos_notify.sender import Sender
from perlinsos_shared.clock import now_local
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.db import open_service_db
from perlinsos_shared.envelope import RawEnvelope, make_event
from perlinsos_shared.events import EligibilityDecided, Occupation
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.settings import Settings

_serial = itertools.count(1)


def decision(**overrides: Any) -> EligibilityDecided:
    n = next(_serial)
    values: dict[str, Any] = {
        "decision_id": str(uuid.uuid4()),
        "participant_id": str(uuid.uuid4()),
        "outcome": "eligible",
        "cover_start": date(2026, 1, 5),
        "rule_version": "test",
        "occupation": Occupation.NELAYAN,
        "agency": "DKP",
        "request_id": f"r-{n}",
        "first_name": "Budi",
        "phone_e164": f"+62812{n:08d}",
        "decided_at": now_local(),
        "nik": f"21710{n:011d}",
    }
    values.update(overrides)
    return EligibilityDecided(**values)


def incoming(d: EligibilityDecided) -> Incoming:
    event = make_event("perlinsos/eligibility", d, subject=d.participant_id)
    envelope = RawEnvelope.model_validate_json(event.model_dump_json())
    return Incoming(envelope=envelope, key=d.participant_id, headers={}, record=SimpleNamespace())  # type: ignore[arg-type]


def sms_settings(fake: FakeTwilio | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sms_backoff_base_s": 0.05,
        "sms_backoff_max_s": 0.5,
        "sms_timeout_s": 0.3,
    }
    if fake is not None:
        values.update(
            sms_provider="twilio",
            twilio_api_base=fake.url,
            twilio_account_sid=fake.account_sid,
            twilio_auth_token=fake.auth_token,
            twilio_from="PERLINSOS",
        )
    values.update(overrides)
    return Settings(**values)


async def store(
    pool: asyncpg.Pool, settings: Settings, decisions: list[EligibilityDecided]
) -> None:
    """What the decisions consumer does with a batch (inbox aside)."""
    handler = make_handler(settings)
    async with pool.acquire() as conn, conn.transaction():
        outbox = Outbox()
        await handler(conn, [incoming(d) for d in decisions], outbox)
        await outbox.flush(conn)


async def run_until(
    senders: list[Sender],
    check: Callable[[], Awaitable[bool]],
    timeout: float = 30.0,
) -> None:
    tasks = [asyncio.create_task(s.run()) for s in senders]
    tasks += [asyncio.create_task(s.reconciler.run()) for s in senders]
    try:
        deadline = time.monotonic() + timeout
        while not await check():
            for t in tasks:
                if t.done():
                    t.result()  # a crashed sender fails the test with its error
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in senders:
            await s.close()


@pytest.fixture
async def notify_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_service_db(database_url, "notify", pool_size=6)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as f:
        yield f
