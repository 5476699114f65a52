"""Hypothesis throws arbitrary and mutated payloads at the running registry (real broker,
real PostgreSQL): the consumer keeps running and every message ends as a participant, a
rejection or a dead letter (or, for a reused request id, as the stored outcome)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perlinsos_devruntime.stack import Stack
from perlinsos_shared.envelope import CONTENT_TYPE, RawEnvelope
from perlinsos_shared.events import EnrolmentSubmitted
from perlinsos_shared.signing import HEADER, sign_as_claimed
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, PARTICIPANTS

pytestmark = pytest.mark.flow

_serial = itertools.count(1)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
DATA_FIELDS = sorted(EnrolmentSubmitted.model_fields)
ENVELOPE_FIELDS = ["id", "source", "type", "specversion", "data", "time", "subject"]

mutations = st.one_of(
    st.just(("valid",)),
    st.tuples(st.just("field"), st.sampled_from(DATA_FIELDS), json_values),
    st.tuples(st.just("drop"), st.sampled_from(DATA_FIELDS)),
    st.tuples(
        st.just("nested"),
        st.sampled_from(["address", "evidence"]),
        st.text(max_size=10),
        json_values,
    ),
    st.tuples(st.just("envelope"), st.sampled_from(ENVELOPE_FIELDS), json_values),
    st.tuples(st.just("bytes"), st.binary(max_size=120)),
    st.tuples(st.just("json"), json_values),
)


def base_submission() -> dict[str, Any]:
    n = next(_serial)
    request_id = f"FUZZ-{uuid.uuid4().hex[:10]}"
    return {
        "agency": "DISHUB",
        "request_id": request_id,
        "nik": f"217110150590{n:04d}",
        "full_name": "Budi Santoso",
        "birth_date": "1990-05-15",
        "sex": "L",
        "phone": "081234567890",
        "address": {"kecamatan": "Batam Kota", "kelurahan": "Belian", "rt": "3", "rw": "5"},
        "occupation": "OJEK_DARING",
        "evidence": {"platform": "GRAB", "driver_id": f"G-{n}"},
        "existing_bpjs_tk": False,
    }


def build(mutation: tuple[Any, ...]) -> tuple[bytes | None, bytes]:
    """(key, value) of one message after a mutation of a valid submission."""
    data = base_submission()
    key = data["nik"].encode()
    env: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "agency/DISHUB",
        "type": EnrolmentSubmitted.event_type,
        "time": "2025-10-01T09:00:00+07:00",
        "data": data,
    }
    kind = mutation[0]
    if kind == "field":
        data[mutation[1]] = copy.deepcopy(mutation[2])
    elif kind == "drop":
        del data[mutation[1]]
    elif kind == "nested":
        data[mutation[1]][mutation[2]] = copy.deepcopy(mutation[3])
    elif kind == "envelope":
        env[mutation[1]] = copy.deepcopy(mutation[2])
    elif kind == "bytes":
        return None, mutation[1]
    elif kind == "json":
        return None, json.dumps(mutation[1]).encode()
    return key, json.dumps(env).encode()


class Tracker:
    """Reads what registry emits and remembers, per message, whether it was answered."""

    def __init__(self, bootstrap: str, database_url: str) -> None:
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.answered: set[str] = set()  # envelope ids with an event in reply
        self.dead: set[tuple[int, int]] = set()  # (partition, offset) dead-lettered
        self.enrolled: set[str] = set()  # request ids enrolled

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await self.consumer.start()
        parts = [
            TopicPartition(t, p)
            for t in (INTAKE_REJECTED.name, PARTICIPANTS.name, INTAKE.dlq)
            for p in sorted(self.consumer.partitions_for_topic(t) or [])
        ]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)
        self.db = await asyncpg.connect(self.database_url)
        await self.db.execute('SET search_path TO "registry"')

    async def stop(self) -> None:
        await self.producer.stop()
        await self.consumer.stop()
        await self.db.close()

    async def poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=100)
        for tp, records in batches.items():
            for r in records:
                headers = {k: v.decode(errors="replace") for k, v in r.headers or ()}
                if tp.topic == INTAKE.dlq:
                    self.dead.add(
                        (
                            int(headers["x-dlq-original-partition"]),
                            int(headers["x-dlq-original-offset"]),
                        )
                    )
                    continue
                if "in-reply-to" in headers:
                    self.answered.add(headers["in-reply-to"])
                if tp.topic == PARTICIPANTS.name:
                    self.enrolled.add(json.loads(r.value)["data"]["request_id"])

    async def stored_outcome(self, event_id: str, data: Any) -> bool:
        """A reused (agency, request_id) is answered by its stored outcome, not a new event."""
        if not isinstance(data, dict):
            return False
        agency, request_id = data.get("agency"), data.get("request_id")
        if not (isinstance(agency, str) and isinstance(request_id, str)):
            return False
        return bool(
            await self.db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM inbox WHERE event_id = $1) AND EXISTS ("
                "SELECT 1 FROM submissions WHERE agency = $2 AND request_id = $3"
                " AND event_id <> $1)",
                event_id,
                agency,
                request_id,
            )
        )

    async def run(self, messages: list[tuple[bytes | None, bytes]], used_ids: set[str]) -> None:
        sent = []
        for key, value in messages:
            # signed as the agency it claims to be: origin has its own tests
            sig = sign_as_claimed(value)
            headers = [("content-type", CONTENT_TYPE.encode())]
            headers += [(HEADER, sig.encode())] if sig else []
            meta = await self.producer.send_and_wait(INTAKE.name, value, key=key, headers=headers)
            try:
                envelope: RawEnvelope | None = RawEnvelope.model_validate_json(value)
            except ValueError:
                envelope = None
            sent.append((meta, envelope))
        deadline = time.monotonic() + 120  # generous: CI machines are shared
        pending = list(sent)
        while pending:
            await self.poll()
            still = []
            for meta, envelope in pending:
                if (meta.partition, meta.offset) in self.dead:
                    continue
                if envelope is not None:
                    if envelope.id in self.answered or envelope.id in used_ids:
                        continue  # a reused event id is a redelivery: dropped by the inbox
                    if await self.stored_outcome(envelope.id, envelope.data):
                        continue
                still.append((meta, envelope))
            pending = still
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} messages without an outcome: {pending[:3]}")
        used_ids.update(e.id for _, e in sent if e is not None)


def test_arbitrary_payloads_all_end_somewhere(registry_stack: Stack) -> None:
    loop = asyncio.new_event_loop()
    tracker = Tracker(registry_stack.bootstrap_servers, registry_stack.database_url)
    loop.run_until_complete(tracker.start())
    used_ids: set[str] = set()
    try:

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(mutations, min_size=1, max_size=8))
        def throw(batch: list[tuple[Any, ...]]) -> None:
            loop.run_until_complete(tracker.run([build(m) for m in batch], used_ids))
            assert registry_stack.alive() == []

        throw()
        # still consuming: a clean submission after all that is enrolled
        sentinel = build(("valid",))
        loop.run_until_complete(tracker.run([sentinel], used_ids))
        request_id = json.loads(sentinel[1])["data"]["request_id"]
        assert request_id in tracker.enrolled
        assert registry_stack.alive() == []
    finally:
        loop.run_until_complete(tracker.stop())
        loop.close()
