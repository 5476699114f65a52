"""Real messages validate against docs/asyncapi.json, and the document says what the code does.

Every event type the code can publish is encoded the way the code encodes it (the outbox's
`encode`, the agency client's `submission_event`) and validated, with its headers and key,
against the message the committed document gives its channel; so are an enrolment and an
exit written by hand the way DESIGN.md tells agencies to write them, a binary-mode
enrolment, and a dead letter. The operations are checked against the services' code: the
topics each `app.py` consumes and the topics its package hands to `outbox.add`.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from perlinsos_shared import topics as topics_module
from perlinsos_shared.asyncapi import SERVICES, document
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.envelope import (
    CONTENT_TYPE,
    CloudEvent,
    binary_headers,
    binary_value,
    encode,
    make_event,
)
from perlinsos_shared.events import (
    Address,
    BpjsMembershipAnswered,
    EligibilityDecided,
    EnrolmentSubmitted,
    ExitReason,
    ExitReported,
    FundingLine,
    IntakeRejected,
    InvoiceReconciled,
    Occupation,
    ParticipantBpjsAnswered,
    ParticipantEnrolled,
    ParticipantExited,
    PaymentRecorded,
    PremiumSummaryWithArrears,
    Reason,
    SmsDelivery,
)
from perlinsos_shared.intake_client import submission_event
from perlinsos_shared.topics import CATALOGUE, Topic, by_name, rejection_key

ROOT = Path(__file__).resolve().parents[1]
DOC: dict[str, Any] = json.loads((ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8"))
COMPONENT_KEY = re.compile(r"^[a-zA-Z0-9\.\-_]+$")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
WHEN = datetime(2026, 11, 28, 9, 0, tzinfo=BATAM_TZ)


def validator(pointer: str) -> jsonschema.Draft7Validator:
    """A validator for the schema at `pointer` in the document, its $refs resolved there."""
    return jsonschema.Draft7Validator({**DOC, "$ref": pointer})


def errors(pointer: str, instance: Any) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator(pointer).iter_errors(instance)]


def channel_messages(topic: str) -> dict[str, str]:
    """Message name -> component pointer, for one channel."""
    refs = DOC["channels"][topic]["messages"]
    return {name: ref["$ref"] for name, ref in refs.items()}


def matching_messages(topic: str, value: bytes, headers: dict[str, str]) -> list[str]:
    """The channel's messages whose payload and headers both accept this record."""
    body = orjson.loads(value)
    out = []
    for name, pointer in channel_messages(topic).items():
        message = pointer.removeprefix("#")
        if errors(f"#{message}/payload", body) or errors(f"#{message}/headers", headers):
            continue
        out.append(name)
    return out


def assert_valid_record(topic: str, key: str | None, value: bytes, headers: dict[str, str]) -> None:
    body = orjson.loads(value)
    matches = matching_messages(topic, value, headers)
    assert len(matches) == 1, (topic, body.get("type"), matches, explain(topic, body, headers))
    message = channel_messages(topic)[matches[0]].removeprefix("#")
    assert not errors(f"#{message}/bindings/kafka/key", key)
    assert key is not None and "None" not in key, key


def explain(topic: str, body: Any, headers: dict[str, str]) -> list[str]:
    found = []
    for pointer in channel_messages(topic).values():
        found += errors(f"{pointer}/payload", body) + errors(f"{pointer}/headers", headers)
    return found


def outbox_headers(*, reply: bool = False) -> dict[str, str]:
    """What `Outbox.add` writes: content type and the trace context (and registry's
    in-reply-to); the relay adds a fresh traceparent."""
    headers = {"content-type": CONTENT_TYPE, "traceparent": TRACEPARENT}
    if reply:
        headers["in-reply-to"] = str(uuid.uuid4())
    return headers


# --- one example of every event type the code publishes ---------------------------------


def published() -> list[tuple[Topic, str, CloudEvent[Any]]]:
    """(topic, key, event) as the services (and the CLI, for finance) build them."""
    pid = str(uuid.uuid4())
    enrolled = ParticipantEnrolled(
        participant_id=pid,
        nik="2171011708900001",
        full_name="Budi Santoso",
        birth_date=date(1990, 8, 17),
        sex="L",
        phone_e164="+6281234567890",
        address=Address(kecamatan="Batam Kota", kelurahan="Belian", rt="001", rw="002"),
        occupation=Occupation.OJEK_DARING,
        existing_bpjs_tk=False,
        agency="DISHUB",
        request_id="DISHUB-2026-000001",
        enrolled_at=WHEN,
    )
    exited = ParticipantExited(
        participant_id=pid,
        agency="DISHUB",
        request_id="DISHUB-2026-000002",
        reason=ExitReason.MOVED_AWAY,
        effective_date=date(2026, 12, 1),
    )
    decided = EligibilityDecided(
        decision_id=str(uuid.uuid4()),
        participant_id=pid,
        outcome="eligible",
        funding_line=FundingLine.PERWAKO_49_2025,
        cover_start=date(2026, 11, 1),
        rule_version="PERWAKO-49-2025@2025-10-01",
        occupation=Occupation.OJEK_DARING,
        agency="DISHUB",
        request_id="DISHUB-2026-000001",
        first_name="Budi",
        phone_e164="+6281234567890",
        decided_at=WHEN,
        nik="2171011708900001",
    )
    later = decided.model_copy(
        update={"decision_id": str(uuid.uuid4()), "outcome": "waitlisted", "nik": None}
    )
    summary = PremiumSummaryWithArrears(
        funding_line=FundingLine.PERWAKO_3_2023,
        period="2026-11",
        status="provisional",
        revision=3,
        participants=1,
        jkk_idr=10_000,
        jkm_idr=6_800,
        adjustments_idr=0,
        amount_idr=16_800,
        budget_idr=1_000_000_000,
        budget_used_idr=16_800,
        overdue_periods=["2026-09"],
    )
    sms = SmsDelivery(
        participant_id=pid,
        decision_id=decided.decision_id,
        template="eligible",
        status="undeliverable",
        provider="file",
        code="PHONE_NOT_MOBILE",
    )
    payment = PaymentRecorded(
        funding_line=FundingLine.PERWAKO_3_2023,
        period="2026-10",
        amount_idr=16_800,
        paid_on=date(2026, 11, 10),
        reference="SP2D-0001",
    )
    refused = IntakeRejected(
        agency="DISHUB",
        request_id="DISHUB-2026-000003",
        nik_masked="217101********01",
        reasons=[Reason(code="NIK_INVALID", field="nik", message="NIK tidak sah")],
    )
    # The rejection of a message whose request id could not be read (not even JSON).
    unreadable = IntakeRejected(
        agency="DISHUB",
        request_id=None,
        nik_masked=None,
        reasons=[Reason(code="SCHEMA_INVALID", message="pesan bukan CloudEvent JSON yang sah")],
    )
    answered = BpjsMembershipAnswered(
        import_id="9f2c" * 16,
        row=2,
        nik="2171011708900001",
        answer="KPJ_ASSIGNED",
        kpj="26012345678",
        cover_start=date(2026, 11, 1),
    )
    stored = ParticipantBpjsAnswered(
        participant_id=pid,
        answer="ALREADY_BPJS_MEMBER",
        refusal="Sudah terdaftar sebagai peserta aktif",
        import_id="9f2c" * 16,
        row=3,
    )
    reconciled = InvoiceReconciled(
        funding_line=FundingLine.PERWAKO_30_2025,
        period="2026-10",
        invoice_id="1b7e" * 16,
        rows=3,
        billed_idr=50_400,
        owed_idr=33_600,
        difference_idr=16_800,
        counts={"MATCHED": 2, "BILLED_NOT_COVERED": 1},
    )
    registry, eligibility = "perlinsos/registry", "perlinsos/eligibility"
    return [
        (
            by_name("bpjs.memberships.v1"),
            answered.nik,
            make_event("finance/perlinsos-cli", answered),
        ),
        (by_name("registry.participants.v1"), pid, make_event(registry, stored, subject=pid)),
        (
            by_name("premium.reconciliations.v1"),
            "PERWAKO-30-2025:2026-10",
            make_event("finance/perlinsos-cli", reconciled, subject="PERWAKO-30-2025:2026-10"),
        ),
        (by_name("registry.participants.v1"), pid, make_event(registry, enrolled)),
        (by_name("registry.participants.v1"), pid, make_event(registry, exited)),
        (by_name("eligibility.decisions.v1"), pid, make_event(eligibility, decided, subject=pid)),
        (by_name("eligibility.decisions.v1"), pid, make_event(eligibility, later, subject=pid)),
        (
            by_name("premium.summaries.v1"),
            "PERWAKO-3-2023:2026-11",
            make_event("perlinsos/premium", summary, subject="PERWAKO-3-2023:2026-11"),
        ),
        (by_name("notify.deliveries.v1"), pid, make_event("perlinsos/notify", sms, subject=pid)),
        (
            by_name("premium.payments.v1"),
            "PERWAKO-3-2023:2026-10",
            make_event("finance/perlinsos-cli", payment),
        ),
        (
            by_name("registry.intake-rejected.v1"),
            rejection_key("DISHUB", refused.request_id),
            make_event(registry, refused),
        ),
        (
            by_name("registry.intake-rejected.v1"),
            rejection_key("DISHUB", unreadable.request_id),
            make_event(registry, unreadable),
        ),
    ]


# DESIGN.md, "Intake": what an agency writes, by hand, without perlinsos's code.
DESIGN_ENROLMENT = {
    "specversion": "1.0",
    "id": "5b1f0c9e-2f7a-4c1e-9a57-3f6c1d2e8b10",
    "source": "agency/DISHUB",
    "type": "perlinsos.enrolment.submitted.v1",
    "time": "2025-09-26T19:00:00+07:00",
    "datacontenttype": "application/json",
    "data": {
        "agency": "DISHUB",
        "request_id": "DISHUB-2025-000123",
        "nik": "2171011708900001",
        "full_name": "Budi Santoso",
        "birth_date": "1990-08-17",
        "sex": "L",
        "phone": "0812-3456-7890",
        "address": {
            "kecamatan": "Batam Kota",
            "kelurahan": "Belian",
            "rt": "001",
            "rw": "002",
            "street": "Jl. Engku Putri No. 1",
        },
        "occupation": "OJEK_DARING",
        "evidence": {"platform": "Gojek", "driver_id": "GJK-778899"},
        "existing_bpjs_tk": False,
    },
}
DESIGN_EXIT = {
    "specversion": "1.0",
    "id": "9d0c6c1e-6a53-4c1b-8b0e-2b1f5d8e7a21",
    "source": "agency/DISHUB",
    "type": "perlinsos.enrolment.exit-reported.v1",
    "time": "2026-02-01T08:00:00+07:00",
    "datacontenttype": "application/json",
    "data": {
        "agency": "DISHUB",
        "request_id": "DISHUB-2026-000456",
        "nik": "2171011708900001",
        "reason": "MOVED_AWAY",
        "effective_date": "2026-02-28",
    },
}


def test_the_committed_document_is_generated_from_the_code() -> None:
    assert document() == DOC, "docs/asyncapi.json is stale: run `make asyncapi`"


def test_every_event_type_the_code_publishes_has_an_example_here() -> None:
    published_types = {event.type for _, _, event in published()}
    agency_types = {DESIGN_ENROLMENT["type"], DESIGN_EXIT["type"]}
    catalogue_types = {m.event_type for t in CATALOGUE for m in t.events}
    assert published_types | agency_types == catalogue_types


@pytest.mark.parametrize(
    "example", published(), ids=lambda e: f"{e[2].type}:{e[1][:20]}" if isinstance(e, tuple) else ""
)
def test_every_published_event_validates_against_its_channel(
    example: tuple[Topic, str, CloudEvent[Any]],
) -> None:
    topic, key, event = example
    value = encode(event)
    assert_valid_record(topic.name, key, value, outbox_headers(reply=topic.producer == "registry"))


def test_a_rejection_whose_request_id_was_unreadable_keeps_its_null_fields() -> None:
    *_, (_topic, key, event) = published()
    body = orjson.loads(encode(event))
    assert body["data"]["request_id"] is None and body["data"]["nik_masked"] is None
    assert key == "DISHUB"
    IntakeRejected.model_validate(body["data"])  # the model reads its own output
    assert "subject" not in body, "absent optional attributes stay absent"


@pytest.mark.parametrize("event", [DESIGN_ENROLMENT, DESIGN_EXIT], ids=["enrolment", "exit"])
def test_intake_written_the_way_design_md_says_validates(event: dict[str, Any]) -> None:
    value = json.dumps(event).encode()
    # An agency may send no header at all, or the content type and its trace context.
    assert_valid_record("registry.intake.v1", event["data"]["nik"], value, {})
    assert_valid_record(
        "registry.intake.v1",
        event["data"]["nik"],
        value,
        {"content-type": CONTENT_TYPE, "traceparent": TRACEPARENT},
    )
    model = EnrolmentSubmitted if event["type"] == EnrolmentSubmitted.event_type else ExitReported
    model.model_validate(event["data"])


def test_the_agency_client_writes_valid_intake() -> None:
    data = dict(DESIGN_ENROLMENT["data"])  # type: ignore[call-overload]
    value = submission_event("DISHUB", data)
    assert_valid_record("registry.intake.v1", data["nik"], value, {"content-type": CONTENT_TYPE})


def test_a_binary_mode_enrolment_validates_as_the_binary_message() -> None:
    event = CloudEvent[Any].model_validate(DESIGN_ENROLMENT)
    headers = {k: v.decode() for k, v in binary_headers(event)}
    data = orjson.loads(binary_value(event))
    pointer = "#/components/messages/perlinsos.enrolment.submitted.v1.binary"
    assert not errors(f"{pointer}/payload", data)
    assert not errors(f"{pointer}/headers", headers)
    structured = "#/components/messages/perlinsos.enrolment.submitted.v1"
    assert errors(f"{structured}/payload", data), "data alone is not a structured event"


def test_a_wrong_message_is_refused() -> None:
    """The schemas can fail: no `{"root": ...}` wrapper, specversion and id required."""
    wrapped = {"root": DESIGN_ENROLMENT}
    assert not matching_messages("registry.intake.v1", json.dumps(wrapped).encode(), {})
    for attribute in ("specversion", "id"):
        broken = {k: v for k, v in DESIGN_ENROLMENT.items() if k != attribute}
        assert not matching_messages("registry.intake.v1", json.dumps(broken).encode(), {})
    bad_sex = json.loads(json.dumps(DESIGN_ENROLMENT))
    bad_sex["data"]["sex"] = "X"
    assert not matching_messages("registry.intake.v1", json.dumps(bad_sex).encode(), {})


def test_a_dead_letter_is_the_original_bytes_with_dlq_headers() -> None:
    from perlinsos_shared.consumer import dead_letter
    from perlinsos_shared.outbox import Outbox

    @dataclass
    class BadRecord:
        topic: str = "registry.intake.v1"
        partition: int = 2
        offset: int = 41
        key: bytes | None = b"2171011708900001"
        value: bytes | None = b"\xffnot json at all"
        headers: tuple[tuple[str, bytes], ...] = (("traceparent", TRACEPARENT.encode()),)

    outbox = Outbox()
    record = BadRecord()
    dead_letter(outbox, by_name("registry.intake.v1"), record, "ValueError: not JSON")
    assert outbox.values == [record.value] and outbox.topics == ["registry.intake.v1.dlq"]
    pointer = channel_messages("registry.intake.v1.dlq")["dead-letter"]
    assert not errors(f"{pointer}/headers", outbox.headers[0])
    assert DOC["components"]["messages"][pointer.rsplit("/", 1)[1]]["contentType"] == (
        "application/octet-stream"
    )


def test_document_shape_follows_the_specification_and_the_wire() -> None:
    assert DOC["asyncapi"] == "3.1.0"
    assert DOC["defaultContentType"] == CONTENT_TYPE
    for section in ("messages", "schemas"):
        for key in DOC["components"][section]:
            assert COMPONENT_KEY.match(key), key
    text = json.dumps(DOC)
    assert "correlationId" not in text and "correlation_id" not in text
    assert '"root"' not in text
    for name, message in DOC["components"]["messages"].items():
        assert "kafka" in message["bindings"] and "key" in message["bindings"]["kafka"], name
        if not name.endswith((".binary", ".dead-letter")):
            assert message["contentType"] == CONTENT_TYPE
            assert {"specversion", "id"} <= set(message["payload"]["required"])
            for header in ("content-type", "traceparent", "tracestate"):
                assert header in message["headers"]["properties"], (name, header)
    actions = {op["action"] for op in DOC["operations"].values()}
    assert actions == {"send", "receive"}


# --- the operations are what the services' code does ------------------------------------


def topic_constants() -> dict[str, str]:
    return {name: t.name for name, t in vars(topics_module).items() if isinstance(t, Topic)}


def code_of(service: str) -> list[tuple[Path, ast.Module]]:
    package = ROOT / "services" / service / f"perlinsos_{service}"
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(package.glob("*.py"))]


def consumed_in_code(service: str) -> set[str]:
    """Topics passed to `runtime.consume(...)` in the service's app.py."""
    constants, out = topic_constants(), set()
    for path, tree in code_of(service):
        for node in ast.walk(tree):
            if (
                path.name == "app.py"
                and isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "consume"
                and node.args
                and isinstance(node.args[0], ast.Name)
            ):
                out.add(constants[node.args[0].id])
    return out


def published_in_code(service: str) -> set[str]:
    """Topics whose `.name` is handed to `outbox.add(...)` anywhere in the service."""
    constants, out = topic_constants(), set()
    for _, tree in code_of(service):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "outbox"
                and node.args
                and isinstance(node.args[0], ast.Attribute)
                and isinstance(node.args[0].value, ast.Name)
                and node.args[0].value.id in constants
            ):
                out.add(constants[node.args[0].value.id])
    return out


def operations_of(party: str, action: str) -> set[str]:
    return {
        op["channel"]["$ref"].removeprefix("#/channels/")
        for op in DOC["operations"].values()
        if op["action"] == action and op["tags"] == [{"name": party}]
    }


@pytest.mark.parametrize("service", SERVICES)
def test_operations_are_what_each_service_consumes_and_publishes(service: str) -> None:
    consumed = consumed_in_code(service)
    assert consumed, service
    assert operations_of(service, "receive") == consumed
    # It publishes its own topics, and dead-letters what it consumes.
    published_topics = published_in_code(service)
    assert operations_of(service, "send") == published_topics | {t + ".dlq" for t in consumed}
