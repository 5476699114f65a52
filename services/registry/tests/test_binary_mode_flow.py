"""Binary-mode CloudEvents on registry.intake.v1: the same validation and replies.

The CloudEvents Kafka protocol binding lets a producer put the attributes in `ce_*`
headers and only `data` in the value. Registry reads that as it reads structured mode:
a valid enrolment is enrolled, an invalid one gets the same reason codes, and one whose
data is not JSON is dead-lettered and answered with SCHEMA_INVALID (keyed by the agency
alone: its request id could not be read).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from perlinsos_registry.testing import enrolment
from perlinsos_shared.clock import now_local
from perlinsos_shared.events import EnrolmentSubmitted
from perlinsos_shared.signing import HEADER, default_keys_dir, signing_key
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, PARTICIPANTS

from .conftest import IntakeClient

pytestmark = pytest.mark.flow


def binary_record(
    agency: str, data: Any, *, content_type: str = "application/json"
) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(event id, value, headers) of a binary-mode enrolment, as the binding spells it."""
    event_id = str(uuid.uuid4())
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_source": f"agency/{agency}",
        "ce_type": EnrolmentSubmitted.event_type,
        "ce_time": now_local().isoformat(),
        "content-type": content_type,
    }
    value = data if isinstance(data, bytes) else json.dumps(data).encode()
    # signed by the agency, over the value and the ce_* headers (proof of origin)
    headers[HEADER] = signing_key(default_keys_dir(), agency).sign(value, headers)
    return event_id, value, [(k, v.encode()) for k, v in headers.items()]


async def test_binary_mode_enrolments_are_validated_and_answered_like_structured_ones(
    intake: IntakeClient,
) -> None:
    good, bad = enrolment(1), enrolment(2, nik="1234")
    sent = [
        binary_record(good["agency"], good),
        binary_record(bad["agency"], bad),
        binary_record(bad["agency"], b"<enrolment/>", content_type="application/xml"),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=intake.bootstrap, acks="all")
    await producer.start()
    try:
        for (_, value, headers), key in zip(sent, ["k1", "k2", "k3"], strict=True):
            await producer.send_and_wait(INTAKE.name, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()

    await intake.settled(inbox_ids=2, dead_letters=1)
    out = await intake.drain()

    (enrolled,) = out[PARTICIPANTS.name]
    assert enrolled.json()["data"]["request_id"] == good["request_id"]
    assert enrolled.headers["in-reply-to"] == sent[0][0]

    replies = {r.headers.get("in-reply-to"): r for r in out[INTAKE_REJECTED.name]}
    invalid = replies[sent[1][0]].json()["data"]
    assert invalid["request_id"] == bad["request_id"]
    assert [r["code"] for r in invalid["reasons"]] == ["NIK_INVALID"]

    (dead,) = out[INTAKE.dlq]
    assert dead.value == b"<enrolment/>", "a dead letter keeps the original bytes"
    assert "JSON data only" in dead.headers["x-dlq-error"]
    (unreadable,) = [r for r in out[INTAKE_REJECTED.name] if r.json()["data"]["request_id"] is None]
    assert unreadable.key == bad["agency"], "the agency alone, never AGENCY:None"
    body = unreadable.json()["data"]
    assert body["nik_masked"] is None and body["reasons"][0]["code"] == "SCHEMA_INVALID"
    for record in out[INTAKE_REJECTED.name] + out[PARTICIPANTS.name]:
        assert record.key and "None" not in record.key
