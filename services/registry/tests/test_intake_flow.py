"""1,000 mixed intake messages through the real broker and PostgreSQL, registry alone.

Valid submissions, each kind of invalid one, resubmissions and redeliveries, duplicates
across agencies, exits (applied and refused), unknown types and non-JSON: exactly the
expected participants, rejections per code and dead letters, each event exactly once.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from typing import Any

import pytest

from perlinsos_cli.cohort import generate_cohort
from perlinsos_shared.clock import today_local
from perlinsos_shared.events import EnrolmentSubmitted, ExitReported
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, PARTICIPANTS

pytestmark = pytest.mark.flow

REGISTRY_CODES = {
    "NIK_INVALID",
    "BIRTH_DATE_MISMATCH",
    "SEX_MISMATCH",
    "PHONE_INVALID",
    "PHONE_NOT_MOBILE",
    "ADDRESS_INCOMPLETE",
    "EVIDENCE_MISSING",
    "DUPLICATE_NIK",
}
SUBMITTED = EnrolmentSubmitted.event_type
EXIT = ExitReported.event_type


def _bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


async def test_thousand_mixed_messages(intake: Any) -> None:
    envelope = intake.envelope
    rng = random.Random(3)
    cohort = generate_cohort(size=760, seed=11, fault_rate=0.3)
    records: list[tuple[str | None, bytes, dict[str, str] | None]] = []
    expect_codes: dict[tuple[str, str], list[str]] = {}  # refused pair -> codes
    accepted: list[tuple[str, str, dict[str, Any]]] = []  # (agency, request_id, data)
    dead = 0  # dead letters expected
    replies_without_pair = 0  # rejections that cannot carry a request id
    decodable_ids: set[str] = set()

    def send(agency: str | None, key: str | None, doc: dict[str, Any]) -> None:
        decodable_ids.add(doc["id"])
        records.append((key, _bytes(doc), None))

    # 1. the cohort: clean, registry faults, eligibility faults (accepted here), duplicates
    for s in cohort:
        send(s.agency, s.data["nik"], envelope(s.agency, SUBMITTED, s.data))
        if s.fault in REGISTRY_CODES:
            expect_codes[(s.agency, s.request_id)] = [s.fault]
        else:
            accepted.append((s.agency, s.request_id, s.data))
    first_agency = {}
    for agency, _, data in accepted:
        first_agency.setdefault(data["nik"], agency)

    # 2. kinds the cohort has not: agency not allowed, schema, source, unknown type
    clean = [s for s in cohort if s.fault is None]
    for i, s in enumerate(rng.sample(clean, 40)):
        wrong = "KELURAHAN" if s.data["occupation"] in ("OJEK_DARING", "BECAK") else "DISHUB"
        if s.data["occupation"] == "BOAT_PANCUNG":
            wrong = "PERIKANAN"
        rid = f"{wrong}-NA-{i}"
        data = {**s.data, "agency": wrong, "request_id": rid}
        send(wrong, data["nik"], envelope(wrong, SUBMITTED, data))
        expect_codes[(wrong, rid)] = ["AGENCY_NOT_ALLOWED"]
    for i, s in enumerate(rng.sample(clean, 30)):
        rid = f"SCHEMA-{i}"
        data = {**s.data, "request_id": rid, "birth_date": "kemarin"}
        del data["full_name"]
        send(s.agency, s.data["nik"], envelope(s.agency, SUBMITTED, data))
        expect_codes[(s.agency, rid)] = ["SCHEMA_INVALID", "SCHEMA_INVALID"]
    for i, s in enumerate(rng.sample(clean, 10)):
        rid = f"SOURCE-{i}"
        data = {**s.data, "request_id": rid}
        send(s.agency, s.data["nik"], envelope(s.agency, SUBMITTED, data, source="agency/ASING"))
        expect_codes[(s.agency, rid)] = ["SCHEMA_INVALID"]
    for i in range(10):
        rid = f"TYPE-{i}"
        send(
            "DISHUB",
            None,
            envelope(
                "DISHUB", "perlinsos.enrolment.amended.v1", {"agency": "DISHUB", "request_id": rid}
            ),
        )
        expect_codes[("DISHUB", rid)] = ["UNKNOWN_EVENT_TYPE"]

    # 3. resubmissions (new envelope id, same agency + request id) and redeliveries
    for s in rng.sample(cohort, 50):
        send(s.agency, s.data["nik"], envelope(s.agency, SUBMITTED, s.data))
    for key, value, headers in rng.sample(records[:700], 20):
        records.append((key, value, headers))  # the very same event again

    # 4. exits: applied, unknown NIK, before enrolment; one resubmitted
    today = today_local().isoformat()
    exits_ok = rng.sample(accepted, 20)
    exit_niks = {d["nik"] for _, _, d in exits_ok}
    exit_docs = []
    for i, (agency, _, data) in enumerate(exits_ok):
        payload = {
            "agency": agency,
            "request_id": f"EXIT-{i}",
            "nik": data["nik"],
            "reason": "ROLE_ENDED",
            "effective_date": today,
        }
        doc = envelope(agency, EXIT, payload)
        exit_docs.append(doc)
        send(agency, data["nik"], doc)
    # a NIK exited twice through different request ids from DISNAKER: refused the second time
    nik_twice = exits_ok[0][2]["nik"]
    send(
        "DISNAKER",
        nik_twice,
        envelope(
            "DISNAKER",
            EXIT,
            {
                "agency": "DISNAKER",
                "request_id": "EXIT-AGAIN",
                "nik": nik_twice,
                "reason": "OTHER",
                "effective_date": today,
            },
        ),
    )
    expect_codes[("DISNAKER", "EXIT-AGAIN")] = ["ALREADY_EXITED"]
    for i in range(5):
        nik = f"21711001019{i:01d}9999"
        payload = {
            "agency": "DISNAKER",
            "request_id": f"EXIT-UNK-{i}",
            "nik": nik,
            "reason": "DECEASED",
            "effective_date": today,
        }
        send("DISNAKER", nik, envelope("DISNAKER", EXIT, payload))
        expect_codes[("DISNAKER", f"EXIT-UNK-{i}")] = ["UNKNOWN_NIK"]
    early = [a for a in accepted if a[2]["nik"] not in exit_niks][:5]
    for i, (agency, _, data) in enumerate(early):
        payload = {
            "agency": agency,
            "request_id": f"EXIT-EARLY-{i}",
            "nik": data["nik"],
            "reason": "MOVED_AWAY",
            "effective_date": "2001-01-01",
        }
        send(agency, data["nik"], envelope(agency, EXIT, payload))
        expect_codes[(agency, f"EXIT-EARLY-{i}")] = ["EXIT_BEFORE_ENROLMENT"]
    again = dict(exit_docs[1], id=str(uuid.uuid4()))
    send(again["data"]["agency"], again["data"]["nik"], again)

    # 5. not JSON / not an envelope / no agency anywhere
    for i in range(15):
        records.append((None, b"\x00\xffbukan json " + str(i).encode(), None))
        dead += 1
    for i in range(10):  # not JSON, but the agency said who it is in headers
        records.append((None, b"{rusak", {"ce_source": "agency/DISHUB", "request_id": f"RAW-{i}"}))
        dead += 1
        expect_codes[("DISHUB", f"RAW-{i}")] = ["SCHEMA_INVALID"]
    for i in range(5):  # JSON, not an envelope, agency readable from data
        doc = {"data": {"agency": "PERIKANAN", "request_id": f"NOENV-{i}"}}
        records.append((None, _bytes(doc), None))
        dead += 1
        expect_codes[("PERIKANAN", f"NOENV-{i}")] = ["SCHEMA_INVALID"]
    for _ in range(5):  # an envelope nobody can be answered for
        doc = envelope(None, SUBMITTED, {"nik": "1"}, source="unknown-system")
        send(None, None, doc)
        dead += 1
    for _ in range(3):  # answerable but with no request id: a reply without a pair
        send("DISHUB", None, envelope("DISHUB", SUBMITTED, {"agency": "DISHUB"}))
        replies_without_pair += 1

    assert 990 <= len(records) <= 1100, len(records)
    await intake.publish(records)
    await intake.settled(inbox_ids=len(decodable_ids), dead_letters=dead)
    out = await intake.drain()

    # every emitted event exactly once, and nothing on the topics that is not in the outbox
    conn = await intake.registry_db()
    try:
        outbox_rows = Counter(
            {
                r["topic"]: r["n"]
                for r in await conn.fetch("SELECT topic, count(*) AS n FROM outbox GROUP BY topic")
            }
        )
        participants = await conn.fetchval("SELECT count(*) FROM participants")
        exited = await conn.fetchval(
            "SELECT count(*) FROM participants WHERE exited_on IS NOT NULL"
        )
        audit = Counter(
            {
                r["action"]: r["n"]
                for r in await conn.fetch(
                    "SELECT action, count(*) AS n FROM audit_log GROUP BY action"
                )
            }
        )
    finally:
        await conn.close()
    for topic, rows in out.items():
        assert len(rows) == outbox_rows[topic], topic
        if topic != INTAKE.dlq:
            ids = [r.json()["id"] for r in rows]
            assert len(ids) == len(set(ids)), topic

    # participants: one per accepted pair, none for the rest
    enrolled = [
        r.json() for r in out[PARTICIPANTS.name] if r.json()["type"].endswith("enrolled.v1")
    ]
    exits = [r.json() for r in out[PARTICIPANTS.name] if r.json()["type"].endswith("exited.v1")]
    duplicates = {k for k, v in expect_codes.items() if v == ["DUPLICATE_NIK"]}
    want_enrolled = {(a, r) for a, r, _ in accepted}
    assert duplicates and not duplicates & want_enrolled
    assert Counter((e["data"]["agency"], e["data"]["request_id"]) for e in enrolled) == Counter(
        want_enrolled
    )
    assert participants == len(want_enrolled)
    assert len({e["data"]["nik"] for e in enrolled}) == len(enrolled)
    assert {e["data"]["phone_e164"][:4] for e in enrolled} == {"+628"}
    assert sorted(e["data"]["request_id"] for e in exits) == sorted(f"EXIT-{i}" for i in range(20))
    assert exited == 20
    assert audit == Counter({"enrolled": len(want_enrolled), "exited": 20})

    # rejections: exactly the expected codes per pair, one reply per pair
    replies = [r.json()["data"] for r in out[INTAKE_REJECTED.name]]  # None fields are omitted
    got = Counter(
        (d["agency"], d.get("request_id")) for d in replies if d.get("request_id") is not None
    )
    assert set(got.values()) == {1}
    codes_by_pair = {
        (d["agency"], d.get("request_id")): [x["code"] for x in d["reasons"]] for d in replies
    }
    assert {k: v for k, v in codes_by_pair.items() if k[1] is not None} == expect_codes
    assert sum(1 for d in replies if d.get("request_id") is None) == replies_without_pair
    per_code = Counter(code for codes in expect_codes.values() for code in codes)
    assert (
        Counter(x["code"] for d in replies if d.get("request_id") is not None for x in d["reasons"])
        == per_code
    )
    # DUPLICATE_NIK names the agency that enrolled the person first; NIKs leave masked
    for d in replies:
        if d["reasons"][0]["code"] == "DUPLICATE_NIK":
            nik_prefix, nik_suffix = d.get("nik_masked")[:6], d.get("nik_masked")[-2:]
            firsts = {
                a
                for n, a in first_agency.items()
                if n.startswith(nik_prefix) and n.endswith(nik_suffix)
            }
            assert any(a in d["reasons"][0]["message"] for a in firsts)
        if d.get("nik_masked"):
            assert "*" in d.get("nik_masked")
    assert all(json.dumps(d).find(n) < 0 for d in replies for n in list(first_agency)[:50])

    # dead letters: the undecodable and the unanswerable, each with its error in headers
    assert len(out[INTAKE.dlq]) == dead
    assert all(r.headers.get("x-dlq-error") for r in out[INTAKE.dlq])
