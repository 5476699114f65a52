"""Registry alone on a real broker and PostgreSQL: what only the broker path can show.

Real: the broker, PostgreSQL and the registry process; the agency side is this test.
Each batch case (duplicates, resubmissions, exits, re-enrolment, who gets a reply) is
decided by `plan_intake` and tested on plain values in `test_intake_plan.py`, and against
both stores in `test_intake_handler.py`. Here: records that are not JSON or not an
envelope (answered from headers or JSON fragments, and dead-lettered), the very same
record delivered twice (the inbox), replies matched by the `in-reply-to` header, the NIK
masked exactly on every reply, and every event on the topics exactly once, as in the
outbox.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from perlinsos_registry.handlers import IN_REPLY_TO
from perlinsos_registry.testing import enrolment, nik
from perlinsos_shared.events import EnrolmentSubmitted
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, PARTICIPANTS

pytestmark = pytest.mark.flow

SUBMITTED = EnrolmentSubmitted.event_type


def masked(raw: str) -> str:
    """The contract's form, written out: separators dropped, first 6 and last 2 shown."""
    digits = raw.replace(" ", "").replace("-", "").replace(".", "")
    if len(digits) <= 8:
        return "*" * len(digits)
    return digits[:6] + "*" * (len(digits) - 8) + digits[-2:]


async def test_broker_path_replies_dead_letters_redeliveries_and_masking(intake: Any) -> None:
    envelope = intake.envelope
    records: list[tuple[str | None, bytes, dict[str, str] | None]] = []
    decodable: set[str] = set()

    def send(doc: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        decodable.add(doc["id"])
        records.append((key, json.dumps(doc).encode(), None))
        return doc

    good = [send(envelope("DISHUB", SUBMITTED, enrolment(n)), nik(n)) for n in range(1, 41)]
    # refused, with NIKs of every shape the mask must handle
    bad_niks = {
        "R-SHORT": "12345",
        "R-DASHED": "2171-1015-0590-0000",  # serial 0000
        "R-LONG": "21711015059000031234",
        "R-LETTERS": "21711015059OOOO3",
    }
    for rid, raw in bad_niks.items():
        send(envelope("DISHUB", SUBMITTED, enrolment(99, rid=rid, nik=raw)))
    dup = send(envelope("DISNAKER", SUBMITTED, enrolment(1, agency="DISNAKER")), nik(1))
    resubmitted = send(envelope("DISHUB", SUBMITTED, enrolment(2)), nik(2))  # same pair, later
    for value in [records[3][1], records[4][1]]:  # the very same records again
        records.append((None, value, None))
    undecodable = [
        (None, b"\x00\xffbukan json", None),  # nobody to answer
        (None, b"{rusak", {"ce_source": "agency/DISHUB", "request_id": "RAW-1"}),
        (
            None,
            json.dumps({"data": {"agency": "PERIKANAN", "request_id": "NOENV-1"}}).encode(),
            None,
        ),
    ]
    records += undecodable
    nobody = send(envelope(None, SUBMITTED, {"nik": "1"}, source="unknown-system"))

    await intake.publish(records)
    await intake.settled(inbox_ids=len(decodable), dead_letters=len(undecodable) + 1)
    out = await intake.drain()

    conn = await intake.registry_db()
    try:
        outbox = Counter(
            {
                r["topic"]: r["n"]
                for r in await conn.fetch("SELECT topic, count(*) AS n FROM outbox GROUP BY topic")
            }
        )
    finally:
        await conn.close()
    # every event on the topics exactly once, and nothing that is not in the outbox
    assert {t: len(rows) for t, rows in out.items()} == {t: outbox[t] for t in out}
    ids = [r.json()["id"] for t in (PARTICIPANTS.name, INTAKE_REJECTED.name) for r in out[t]]
    assert len(ids) == len(set(ids))

    # 40 enrolled once each, in reply to their own submission
    enrolled = out[PARTICIPANTS.name]
    assert sorted(r.json()["data"]["request_id"] for r in enrolled) == sorted(
        d["data"]["request_id"] for d in good
    )
    assert {r.headers[IN_REPLY_TO] for r in enrolled} == {d["id"] for d in good}

    # replies: one per refused pair, matched by header, NIK masked exactly
    replies = {r.json()["data"].get("request_id"): r for r in out[INTAKE_REJECTED.name]}
    assert set(replies) == {*bad_niks, "DISNAKER-1", "RAW-1", "NOENV-1"}
    for rid, raw in bad_niks.items():
        assert replies[rid].json()["data"]["nik_masked"] == masked(raw)
        assert [x["code"] for x in replies[rid].json()["data"]["reasons"]] == ["NIK_INVALID"]
    assert replies["DISNAKER-1"].json()["data"]["nik_masked"] == masked(nik(1))
    assert replies["DISNAKER-1"].headers[IN_REPLY_TO] == dup["id"]
    assert replies["RAW-1"].json()["data"]["nik_masked"] is None  # required, published as null
    assert resubmitted["id"] not in {r.headers.get(IN_REPLY_TO) for r in out[INTAKE_REJECTED.name]}
    text = b"".join(r.value for r in out[INTAKE_REJECTED.name])
    assert not any(nik(n).encode() in text for n in range(1, 41))

    # dead letters: the undecodable and the unanswerable, each with its error in headers
    assert len(out[INTAKE.dlq]) == len(undecodable) + 1
    assert all(r.headers.get("x-dlq-error") for r in out[INTAKE.dlq])
    assert nobody["id"].encode() in b"".join(r.value for r in out[INTAKE.dlq])
