"""Faults end in the same state as a run without them (DESIGN.md, guarantees).

- Services killed with SIGKILL in the middle of the stream and started again: every
  submission still gets exactly one outcome, one decision, one SMS and one ledger row.
- The broker losing every topic (the embedded broker keeps them in memory): the outboxes
  are replayed into a new, empty broker, consumers see every event again, and nothing
  changes: no participant, decision, SMS, ledger row or summary revision is added.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import get_args

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from perlinsos_devruntime.agency import Listener, publish_submissions, settled_run
from perlinsos_devruntime.cohort import Submission, generate_cohort
from perlinsos_devruntime.embedded import EmbeddedKafka, free_port
from perlinsos_devruntime.stack import Stack
from perlinsos_registry.reasons import IntakeCode
from perlinsos_shared.kafka import ensure_topics
from perlinsos_shared.operator import replay_outboxes
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS, DELIVERIES, PARTICIPANTS, Topic

INTAKE_CODES = frozenset(get_args(IntakeCode))

pytestmark = pytest.mark.flow


def _sms_lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def _state(url: str, sms_file: Path) -> dict[str, object]:
    """What the run left behind, service by service (read by the test, not a service)."""
    conn = await asyncpg.connect(url)
    try:
        state: dict[str, object] = {
            "participants": await conn.fetchval("SELECT count(*) FROM registry.participants"),
            "decisions": await conn.fetchval("SELECT count(*) FROM eligibility.decisions"),
            "ledger_idr": await conn.fetchval(
                "SELECT coalesce(sum(jkk_idr + jkm_idr), 0) FROM premium.ledger"
            ),
            "ledger_rows": await conn.fetchval("SELECT count(*) FROM premium.ledger"),
            "sms_rows": await conn.fetchval("SELECT count(*) FROM notify.messages"),
        }
    finally:
        await conn.close()
    lines = await asyncio.to_thread(_sms_lines, sms_file)
    state["sms_handed_over"] = len(lines)
    state["sms_repeated"] = sum(n - 1 for n in Counter(x["id"] for x in lines).values())
    return state


async def _read_all(bootstrap: str, topic: Topic) -> list[bytes]:
    """Every record of a topic, read until it stays quiet (end offsets are not trusted:
    the embedded broker reports them per record batch)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        values: list[bytes] = []
        quiet = 0
        while quiet < 2:
            batches = await consumer.getmany(timeout_ms=700)
            got = [r.value for records in batches.values() for r in records]
            values += [v for v in got if v is not None]
            quiet = 0 if got else quiet + 1
        return values
    finally:
        await consumer.stop()


async def _decision_ids_per_participant(bootstrap: str) -> Counter[str]:
    seen: dict[str, set[str]] = {}
    for value in await _read_all(bootstrap, DECISIONS):
        data = json.loads(value)["data"]
        seen.setdefault(data["participant_id"], set()).add(data["decision_id"])
    return Counter({pid: len(ids) for pid, ids in seen.items()})


def _handled(stack: Stack) -> Counter[tuple[str, str]]:
    """Per (service, topic): events applied, dropped as duplicates or dead-lettered since
    the service started (from its /metrics endpoint)."""
    out: Counter[tuple[str, str]] = Counter()
    pattern = re.compile(
        r"^perlinsos_(?:messages_applied|messages_duplicates|dead_letters)_total"
        r'\{topic="([^"]+)"\} ([0-9.e+]+)$'
    )
    for svc in stack.services:
        with urllib.request.urlopen(svc.health_url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            m = pattern.match(line)
            if m:
                out[(svc.name, m.group(1))] += int(float(m.group(2)))
    return out


READS = {
    "eligibility": [PARTICIPANTS],
    "premium": [DECISIONS, PARTICIPANTS],
    "notify": [DECISIONS],
}


async def _topic_sizes(stack: Stack) -> dict[str, int]:
    topics = {t for ts in READS.values() for t in ts}
    return {t.name: len(await _read_all(stack.bootstrap_servers, t)) for t in topics}


async def _caught_up(stack: Stack, timeout: float = 90) -> dict[str, int]:
    """Until every service has handled every event on the topics it reads; the topic
    sizes it waited for."""
    sizes = await _topic_sizes(stack)
    deadline = time.monotonic() + timeout
    while True:
        handled = await asyncio.to_thread(_handled, stack)
        missing = {
            (svc, t.name): sizes[t.name] - handled[(svc, t.name)]
            for svc, topics in READS.items()
            for t in topics
            if handled[(svc, t.name)] < sizes[t.name]
        }
        if not missing:
            return sizes
        assert time.monotonic() < deadline, f"not handled yet: {missing}"
        await asyncio.sleep(0.5)


async def _nothing_more_to_happen(stack: Stack, url: str) -> None:
    """A fixed point, not a pause: every service has handled every event on the topics
    it reads, no outbox holds an unpublished row (so nothing those events caused is still
    on its way), and the topics have not grown meanwhile."""
    while True:
        sizes = await _caught_up(stack)
        conn = await asyncpg.connect(url)
        try:
            unpublished = 0
            for service in ("registry", "eligibility", "premium", "notify"):
                unpublished += await conn.fetchval(f"SELECT count(*) FROM {service}.outbox_pending")
        finally:
            await conn.close()
        if unpublished == 0 and await _topic_sizes(stack) == sizes:
            return


async def _converged(
    url: str, sms_file: Path, expected: dict[str, object], timeout: float = 60
) -> dict[str, object]:
    """The state once it is the expected one, or as it is after `timeout` (the ledger and
    the SMS sink trail the decisions the listener has seen)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await _state(url, sms_file)
        if all(state[k] == v for k, v in expected.items()) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


def _expected(subs: list[Submission]) -> dict[str, object]:
    """What a run must end with, from the cohort generator alone (each submission's one
    deliberate fault, or none), not from anything the system reports."""
    refused = [s for s in subs if s.fault in INTAKE_CODES]
    enrolled = len(subs) - len(refused)
    eligible = sum(1 for s in subs if s.fault is None)
    return {
        "participants": enrolled,
        "decisions": enrolled,
        "ledger_idr": 16_800 * eligible,
        "ledger_rows": eligible,
        "sms_rows": enrolled,
        "sms_handed_over": enrolled,
        "sms_repeated": 0,
    }


async def test_services_killed_mid_stream_end_in_the_same_state(
    stack: Stack, settings: Settings
) -> None:
    """SIGKILL of all four services once 10-90% of the submissions are decided, then
    started again: the end state is the one the cohort generator expects (each clean
    person eligible, each intake fault refused with its code, each eligibility fault
    decided ineligible with its code; a participant, decision, SMS and ledger row each
    exactly once)."""
    subs = generate_cohort(size=1500, seed=11, fault_rate=0.05)
    keys = {(s.agency, s.request_id) for s in subs}
    listener = Listener(stack.bootstrap_servers)
    await listener.start()
    listener.outcomes.watch(keys)
    try:
        # send in small chunks, watching the answers between them, and stop sending once
        # 10% of all submissions are answered: the kill then lands in the middle of the work
        sent = 0
        while listener.outcomes.settled(keys) < len(keys) // 10:
            assert sent < len(subs), "not 10% answered after sending everything"
            chunk = subs[sent : sent + 50]
            await publish_submissions(
                stack.bootstrap_servers, ((s.agency, s.data["nik"], s.data) for s in chunk)
            )
            sent += len(chunk)
            await listener.poll(timeout_ms=50)
        at_kill = listener.outcomes.settled(keys)
        assert len(keys) // 10 <= at_kill <= len(keys) * 9 // 10
        assert at_kill < sent, "nothing was in flight when the services were killed"

        def kill() -> None:
            for name in ("registry", "eligibility", "premium", "notify"):
                victim = next(s for s in stack.services if s.name == name)
                stack.stop_service(victim, signal.SIGKILL)

        await asyncio.to_thread(kill)
        await publish_submissions(  # the rest, while the services are down
            stack.bootstrap_servers, ((s.agency, s.data["nik"], s.data) for s in subs[sent:])
        )
        await asyncio.to_thread(
            stack.start_services, ("registry", "eligibility", "premium", "notify")
        )
        await listener.wait_settled(keys, timeout=180)
    finally:
        await listener.stop()
    o = listener.outcomes
    for s in subs:
        key = (s.agency, s.request_id)
        if s.fault in INTAKE_CODES:
            assert key not in o.decisions and s.fault in o.rejections.get(key, []), s.fault
        elif s.fault is None:
            assert o.decisions[key]["outcome"] == "eligible", key
        else:
            decision = o.decisions[key]
            assert decision["outcome"] == "ineligible", s.fault
            assert s.fault in [r["code"] for r in decision["reasons"]], s.fault
    decided = {d["decision_id"] for k, d in o.decisions.items() if k in keys}
    # a SIGKILL between publishing and marking an outbox row published puts that event on
    # the topic twice (at-least-once transport); consumers drop the copy, so what must be
    # once is the effect: every decision delivered, and one SMS and one ledger row each
    assert all(o.decision_count[i] >= 1 for i in decided)
    assert all(o.delivery_count[i] >= 1 for i in decided), "a decision without a delivery"
    expected = _expected(subs)
    state = await _converged(stack.database_url, settings.sms_file, expected)
    assert state == expected
    per_participant = await _decision_ids_per_participant(stack.bootstrap_servers)
    assert set(per_participant.values()) == {1}, "a participant was decided twice"


async def test_broker_that_lost_its_topics_is_refilled_from_the_outboxes(
    infra_mode: str, database_url: str, tmp_path: Path
) -> None:
    if infra_mode != "embedded":
        pytest.skip("needs a broker the test can wipe (the embedded one)")
    kafka = EmbeddedKafka(tmp_path / "kafka", port=free_port())
    kafka.start()
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DATABASE_URL=database_url,
        PERLINSOS_STATE_DIR=tmp_path / "state",
        PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS=3000,
        PERLINSOS_KAFKA_IDEMPOTENT=False,  # the embedded broker does not implement it
    )
    stack = Stack(settings, http_port_base=0)
    try:
        await asyncio.to_thread(stack.start)
        subs = generate_cohort(size=300, seed=5, fault_rate=0.05)
        async with settled_run(stack.bootstrap_servers, subs) as listener:
            decisions = listener.outcomes.decisions
        before = await _converged(database_url, settings.sms_file, _expected(subs))
        assert before == _expected(subs)
        assert sum(1 for d in decisions.values() if d["outcome"] == "eligible") == sum(
            1 for s in subs if s.fault is None
        )

        # the broker loses everything: topics, messages, consumer group offsets
        stack.stop_services()
        kafka.stop()
        kafka.start()
        await ensure_topics(settings)
        assert await _decision_ids_per_participant(kafka.bootstrap_servers) == Counter()

        replayed = await replay_outboxes(database_url)
        assert replayed["eligibility"] >= before["decisions"]  # type: ignore[operator]
        await asyncio.to_thread(stack.start_services)
        refilled: Counter[str] = Counter()
        deadline = time.monotonic() + 60
        while sum(refilled.values()) < before["decisions"]:  # type: ignore[operator]
            assert time.monotonic() < deadline, "the decisions topic was not refilled"
            await asyncio.sleep(0.5)
            refilled = await _decision_ids_per_participant(kafka.bootstrap_servers)
        await _nothing_more_to_happen(stack, database_url)
        after = await _state(database_url, settings.sms_file)
        assert after == before, "replaying the outboxes changed something"
        assert set(refilled.values()) == {1}
        # deliveries are back on their topic too, one per SMS
        deliveries = await _read_all(kafka.bootstrap_servers, DELIVERIES)
        assert len({json.loads(v)["data"]["decision_id"] for v in deliveries}) == before["sms_rows"]
    finally:
        stack.stop()
        kafka.stop()
