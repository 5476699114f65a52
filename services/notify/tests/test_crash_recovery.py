"""A real notify process killed after the provider accepted and before its commit, then
restarted (as two instances), sends nothing again; the other messages go exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer

from perlinsos_devruntime.fake_twilio import FakeTwilio, fault
from perlinsos_devruntime.stack import Stack
from perlinsos_notify.app import CRASH_AFTER_ACCEPT_ENV
from perlinsos_shared.db import create_pool
from perlinsos_shared.envelope import CONTENT_TYPE, encode, make_event
from perlinsos_shared.events import EligibilityDecided
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS, DELIVERIES

from .conftest import decision

pytestmark = pytest.mark.flow


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    s = Stack(settings, http_port_base=0)
    s.start_infrastructure()  # topics only: broker and database come from the fixtures
    yield s
    s.stop()


async def publish(bootstrap: str, decisions: list[EligibilityDecided]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for d in decisions:
            await producer.send(
                DECISIONS.name,
                encode(make_event("perlinsos/eligibility", d, subject=d.participant_id)),
                key=d.participant_id.encode(),
                headers=[("content-type", CONTENT_TYPE.encode())],
            )
        await producer.flush()
    finally:
        await producer.stop()


async def message_rows(database_url: str) -> dict[str, dict[str, object]]:
    pool = await create_pool(database_url, "notify", max_size=1)
    try:
        rows = await pool.fetch(
            "SELECT decision_id, status, provider_message_id, attempts, reconciled FROM messages"
        )
        events = await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1", DELIVERIES.name
        )
    finally:
        await pool.close()
    out = {r["decision_id"]: dict(r) for r in rows}
    out["_delivery_events"] = {"count": events}
    return out


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_after_provider_accept_then_restarted_sends_nothing_again(
    stack: Stack, settings: Settings
) -> None:
    with FakeTwilio() as fake:
        first = decision(first_name="Siti")
        env = {
            **fake.env(),
            CRASH_AFTER_ACCEPT_ENV: "1",
            "SMS_BATCH_SIZE": "1",
            "SMS_BACKOFF_BASE_S": "0.05",
        }
        [doomed] = stack.start_services(("notify",), extra_env=env)
        # the decision, delivered twice (as Kafka may): still one message
        asyncio.run(publish(stack.bootstrap_servers, [first, first]))
        wait_for(lambda: doomed.process.poll() is not None, 60, "the crash after acceptance")
        assert doomed.process.returncode == 86
        assert len(fake.messages) == 1  # the provider has it ...
        before = asyncio.run(message_rows(stack.database_url))
        assert before[first.decision_id]["status"] == "sending"  # ... our commit never came
        stack.stop_service(doomed)

        # restart as two instances, no crash hook; more decisions arrive, the provider
        # throttles and errors now and then
        fake.script([fault("429", 0.1), "500", "ok", "503"] * 5)
        more = [decision() for _ in range(30)]
        stack.start_services(
            ("notify", "notify"), extra_env={**fake.env(), "SMS_BACKOFF_BASE_S": "0.05"}
        )
        asyncio.run(publish(stack.bootstrap_servers, [*more, first]))

        def all_settled() -> bool:
            rows = asyncio.run(message_rows(stack.database_url))
            done = [
                r for k, r in rows.items() if not k.startswith("_") and r["status"] == "accepted"
            ]
            return len(done) == 31 and rows["_delivery_events"]["count"] == 31

        wait_for(all_settled, 90, "every message accepted")
        assert stack.alive() == []

    rows = asyncio.run(message_rows(stack.database_url))
    crashed = rows[first.decision_id]
    assert crashed["provider_message_id"] == fake.messages[0]["sid"]
    assert crashed["reconciled"] is True and crashed["attempts"] == 1
    per_recipient = Counter(m["to"] for m in fake.messages)
    assert per_recipient[first.phone_e164] == 1
    assert len(fake.messages) == 31 and set(per_recipient.values()) == {1}
    assert any(r.method == "GET" for r in fake.requests)  # asked the provider, not resent
