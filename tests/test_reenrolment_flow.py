"""Coming back: a person who exited is enrolled again, through the whole chain.

Real: the broker, PostgreSQL and all four services as processes. Time passes by
restarting the services with a shifted calendar (`PERLINSOS_CLOCK_SHIFT_DAYS`): the
first membership is enrolled and ends 40 days ago, the second begins today. Inputs are
built from the event models in `shared/`.

Expected, independently of what the services count: one participant id with two
memberships; three decisions (eligible, exited, eligible) each with its own SMS; two
covers; billed for the month of the first membership and the month of the second, and
for no month in between (billing is per calendar month, start to end, both included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from perlinsos_devruntime.stack import Stack
from perlinsos_registry.testing import enrolment, exit_of, nik
from perlinsos_shared.clock import CLOCK_SHIFT_ENV, period_of, today_local
from perlinsos_shared.envelope import CONTENT_TYPE, encode, make_event
from perlinsos_shared.events import EnrolmentSubmitted, ExitReported
from perlinsos_shared.settings import Settings
from perlinsos_shared.signing import HEADER, default_keys_dir, signing_key
from perlinsos_shared.topics import DECISIONS, DELIVERIES, INTAKE, INTAKE_REJECTED, PARTICIPANTS

pytestmark = pytest.mark.flow

SHIFT_DAYS = -40
RATE = 16_800  # per person per month (JKK + JKM)


class Topics:
    """Every event on the topics the chain answers on, counted (none overwritten)."""

    NAMES = (PARTICIPANTS.name, DECISIONS.name, DELIVERIES.name, INTAKE_REJECTED.name)

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        self.events: dict[str, list[dict[str, Any]]] = {t: [] for t in self.NAMES}

    async def start(self) -> None:
        await self.consumer.start()
        parts = [
            TopicPartition(t, p)
            for t in self.NAMES
            for p in sorted(self.consumer.partitions_for_topic(t) or [0])
        ]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def until(self, what: str, done: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached within {timeout:.0f}s: {what}")
            for tp, records in (await self.consumer.getmany(timeout_ms=300)).items():
                self.events[tp.topic] += [orjson.loads(r.value) for r in records if r.value]

    def data(self, topic: str, pid: str | None = None) -> list[dict[str, Any]]:
        out = [e["data"] for e in self.events[topic]]
        return [d for d in out if pid is None or d.get("participant_id") == pid]


async def send(bootstrap: str, key: str, event: EnrolmentSubmitted | ExitReported) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        value = encode(make_event(f"agency/{event.agency}", event))
        signature = signing_key(default_keys_dir(), event.agency).sign(value)
        headers = [("content-type", CONTENT_TYPE.encode()), (HEADER, signature.encode())]
        await producer.send_and_wait(INTAKE.name, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def billed(stack: Stack, pid: str) -> dict[str, int]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT period, jkk_idr + jkm_idr AS idr FROM premium.ledger WHERE participant_id = $1",
            pid,
        )
    finally:
        await conn.close()
    return {r["period"]: r["idr"] for r in rows}


async def test_a_person_who_exited_is_enrolled_again_with_own_decision_cover_bill_and_sms(
    settings: Settings,
) -> None:
    today = today_local()
    then = today + timedelta(days=SHIFT_DAYS)
    stack = Stack(settings, http_port_base=0)
    await asyncio.to_thread(stack.start_infrastructure)
    topics = Topics(stack.bootstrap_servers)
    try:
        # 40 days ago: enrolled, then exited the same day
        await asyncio.to_thread(
            stack.start_services, timeout=240, extra_env={CLOCK_SHIFT_ENV: str(SHIFT_DAYS)}
        )
        await topics.start()
        person = nik(7)
        await send(
            stack.bootstrap_servers,
            person,
            EnrolmentSubmitted.model_validate(enrolment(7, rid="FIRST")),
        )
        await topics.until(
            "first decision and its SMS", lambda: len(topics.data(DELIVERIES.name)) == 1
        )
        (first,) = topics.data(PARTICIPANTS.name)
        pid = first["participant_id"]
        await send(
            stack.bootstrap_servers,
            person,
            ExitReported.model_validate(exit_of(7, then, rid="LEFT")),
        )
        await topics.until(
            "exit decision and its SMS", lambda: len(topics.data(DELIVERIES.name)) == 2
        )
        await asyncio.to_thread(stack.stop_services)

        # today: the same person comes back, through another agency
        await asyncio.to_thread(stack.start_services, timeout=240)  # a loaded machine
        back = enrolment(7, agency="DISNAKER", rid="BACK", phone="0813-1111-2222")
        await send(stack.bootstrap_servers, person, EnrolmentSubmitted.model_validate(back))
        await topics.until(
            "second decision and its SMS", lambda: len(topics.data(DELIVERIES.name)) == 3
        )
        for _ in range(120):  # premium bills from the same decisions, on its own time
            if len(bill := await billed(stack, pid)) >= 2:
                break
            await asyncio.sleep(0.5)
    finally:
        await topics.consumer.stop()
        await asyncio.to_thread(stack.stop)

    participants = topics.data(PARTICIPANTS.name)
    assert [(d["participant_id"], d.get("membership"), d["request_id"]) for d in participants] == [
        (pid, 1, "FIRST"), (pid, None, "LEFT"), (pid, 2, "BACK"),
    ]  # fmt: skip
    assert participants[2]["phone_e164"] == "+6281311112222"
    decisions = topics.data(DECISIONS.name, pid)
    assert [(d["outcome"], d["cover_start"], d.get("cover_end")) for d in decisions] == [
        ("eligible", then.isoformat(), None),
        ("exited", then.isoformat(), then.isoformat()),
        ("eligible", today.isoformat(), None),
    ]
    assert len({d["decision_id"] for d in decisions}) == 3
    sms = topics.data(DELIVERIES.name, pid)
    assert sorted(d["decision_id"] for d in sms) == sorted(d["decision_id"] for d in decisions)
    assert {d["status"] for d in sms} == {"accepted"}
    assert topics.data(INTAKE_REJECTED.name) == []
    assert bill == {period_of(then): RATE, period_of(today): RATE}
