"""The public contracts of DESIGN.md, checked against the code that carries them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from perlinsos_shared.envelope import (
    CONTENT_TYPE,
    CloudEvent,
    RawEnvelope,
    binary_headers,
    binary_value,
    decode_message,
    encode,
    make_event,
)
from perlinsos_shared.events import IntakeRejected, PremiumSummary, Reason
from perlinsos_shared.masking import mask_nik, pseudonym, pseudonyms
from perlinsos_shared.settings import get_settings, settings_env
from perlinsos_shared.topics import CATALOGUE, all_topic_names, by_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_topic_has_a_dead_letter_twin_and_a_version() -> None:
    names = all_topic_names()
    for topic in CATALOGUE:
        assert topic.name.endswith(".v1")
        assert topic.dlq == topic.name + ".dlq"
        assert topic.dlq in names
        assert topic.partitions >= 1
        assert topic.events, topic.name


def test_public_topic_names_are_the_contract() -> None:
    for name in ("registry.intake.v1", "registry.intake-rejected.v1", "premium.summaries.v1"):
        assert by_name(name).name == name
    assert by_name("premium.summaries.v1").compacted


def test_finance_summary_fields_are_the_contract() -> None:
    assert set(PremiumSummary.model_fields) == {
        "funding_line", "period", "status", "revision", "participants", "jkk_idr",
        "jkm_idr", "adjustments_idr", "amount_idr", "budget_idr", "budget_used_idr",
    }  # fmt: skip
    assert PremiumSummary.event_type == "perlinsos.premium.summary.v1"


def test_intake_rejection_fields_are_the_contract() -> None:
    assert set(IntakeRejected.model_fields) == {"agency", "request_id", "nik_masked", "reasons"}
    assert set(Reason.model_fields) == {"code", "field", "message"}


def test_envelope_is_structured_cloudevents_json() -> None:
    event = make_event(
        "perlinsos/registry",
        IntakeRejected(
            agency="DISHUB",
            request_id="R-1",
            nik_masked=mask_nik("2171011708450001"),
            reasons=[Reason(code="NIK_INVALID", field="nik", message="NIK tidak valid")],
        ),
    )
    raw = json.loads(encode(event))
    assert raw["specversion"] == "1.0"
    assert raw["type"] == "perlinsos.intake.rejected.v1"
    assert raw["source"] == "perlinsos/registry"
    assert raw["datacontenttype"] == "application/json"
    assert raw["time"].endswith("+07:00"), "times carry Batam's offset"
    assert raw["data"]["nik_masked"] == "217101********01"
    parsed = RawEnvelope.model_validate_json(encode(event))
    assert parsed.id == event.id


def test_unknown_fields_in_data_are_ignored() -> None:
    body = {
        "specversion": "1.0",
        "id": "x",
        "source": "perlinsos/premium",
        "type": "perlinsos.premium.summary.v1",
        "time": "2026-01-31T23:00:00+07:00",
        "data": {
            "funding_line": "PERWAKO-3-2023", "period": "2026-01", "status": "provisional",
            "revision": 1, "participants": 1, "jkk_idr": 10000, "jkm_idr": 6800,
            "adjustments_idr": 0, "amount_idr": 16800, "budget_idr": 0, "budget_used_idr": 0,
            "a_field_from_the_future": True,
        },
    }  # fmt: skip
    event = CloudEvent[PremiumSummary].model_validate(body)
    assert event.data.amount_idr == 16_800


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "26-01", "2026-00"])
def test_periods_are_yyyy_mm(period: str) -> None:
    with pytest.raises(ValueError):
        PremiumSummary(
            funding_line="PERWAKO-3-2023", period=period, status="closed", revision=1,
            participants=0, jkk_idr=0, jkm_idr=0, adjustments_idr=0, amount_idr=0,
            budget_idr=0, budget_used_idr=0,
        )  # fmt: skip


# --- binary mode (CloudEvents Kafka protocol binding) ---------------------------------


def _rejection() -> CloudEvent[Any]:
    return make_event(
        "agency/DISHUB",
        IntakeRejected(agency="DISHUB", request_id="R-9", nik_masked=None, reasons=[]),
        subject="R-9",
    )


def test_a_binary_mode_event_decodes_to_the_same_envelope_as_structured_mode() -> None:
    event = _rejection()
    structured = decode_message(encode(event), [("content-type", CONTENT_TYPE.encode())])
    binary = decode_message(binary_value(event), binary_headers(event))
    assert binary.model_dump() == structured.model_dump()
    assert binary.data["request_id"] == "R-9" and binary.data["nik_masked"] is None
    # No header at all is structured mode, as agencies have always sent it.
    assert decode_message(encode(event)).id == event.id


@pytest.mark.parametrize(
    ("content_type", "value", "why"),
    [
        ("application/xml", b"<enrolment/>", "JSON data only"),
        ("application/json", b"{not json", "data is not JSON"),
    ],
)
def test_binary_mode_with_data_that_is_not_json_is_refused_with_a_reason(
    content_type: str, value: bytes, why: str
) -> None:
    headers = [(k, v) for k, v in binary_headers(_rejection()) if k != "content-type"]
    with pytest.raises(ValueError, match=why):
        decode_message(value, [*headers, ("content-type", content_type.encode())])


def test_binary_mode_without_a_required_attribute_is_refused() -> None:
    headers = [(k, v) for k, v in binary_headers(_rejection()) if k != "ce_id"]
    with pytest.raises(ValueError, match="id"):
        decode_message(b"{}", headers)


# --- keyed pseudonyms ------------------------------------------------------------------


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.delenv("PERLINSOS_PSEUDONYM_SECRET", raising=False)
    monkeypatch.delenv("PERLINSOS_PSEUDONYM_PREVIOUS_SECRETS", raising=False)
    monkeypatch.setenv("PERLINSOS_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield tmp_path / "state"
    get_settings.cache_clear()


def test_pseudonyms_are_hmac_under_a_key_kept_in_the_state_directory(key_env: Path) -> None:
    nik = "2171011708900001"
    first = pseudonym(nik)
    key_file = key_env / "pseudonym.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip().encode()
    assert first == hmac.new(key, nik.encode(), hashlib.sha256).hexdigest()[:32]
    assert first != hashlib.sha256(("perlinsos:" + nik).encode()).hexdigest()[:32]
    assert pseudonym(nik) == first and pseudonym("2171011708900002") != first
    assert nik not in first


def test_a_configured_secret_wins_and_previous_ones_stay_findable(
    key_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nik = "2171011708900001"
    monkeypatch.setenv("PERLINSOS_PSEUDONYM_SECRET", "old-key")
    get_settings.cache_clear()
    old = pseudonym(nik)
    assert not (key_env / "pseudonym.key").exists()
    monkeypatch.setenv("PERLINSOS_PSEUDONYM_SECRET", "new-key")
    monkeypatch.setenv("PERLINSOS_PSEUDONYM_PREVIOUS_SECRETS", "old-key")
    get_settings.cache_clear()
    assert pseudonym(nik) != old
    assert pseudonyms(nik) == [pseudonym(nik), old]
    # `perlinsos up` hands the real secret to the services, not pydantic's mask
    assert settings_env(get_settings())["PERLINSOS_PSEUDONYM_SECRET"] == "new-key"


def test_the_official_cloudevents_sdk_and_perlinsos_read_each_other() -> None:
    """Events made by the CloudEvents Python SDK, in binary and in structured mode, decode
    to the same envelope; the SDK reads what perlinsos writes."""
    from cloudevents.v1.http import CloudEvent as SdkEvent
    from cloudevents.v1.kafka import KafkaMessage, from_structured, to_binary, to_structured

    data = {"agency": "DISHUB", "request_id": "R-7", "nik": "2171011708900001", "x": None}
    sdk = SdkEvent(
        {
            "type": "perlinsos.enrolment.submitted.v1",
            "source": "agency/DISHUB",
            "datacontenttype": "application/json",
            "partitionkey": data["nik"],
        },
        data,
    )
    for message in (to_binary(sdk), to_structured(sdk)):
        envelope = decode_message(message.value, list(message.headers.items()))
        assert (envelope.id, envelope.source, envelope.type) == (
            sdk["id"],
            "agency/DISHUB",
            "perlinsos.enrolment.submitted.v1",
        )
        assert envelope.data == data
        assert message.key == data["nik"]

    ours = _rejection()
    read = from_structured(
        KafkaMessage({"content-type": CONTENT_TYPE.encode()}, b"DISHUB", encode(ours))
    )
    assert read["id"] == ours.id and read["type"] == "perlinsos.intake.rejected.v1"
    assert read.data["request_id"] == "R-9" and read.data["nik_masked"] is None


def test_event_ids_are_uuids_in_their_usual_form() -> None:
    # Version 7 (RFC 9562): a millisecond prefix, then random bits and a counter; any
    # CloudEvents reader takes it as the opaque unique string the contract asks for.
    import uuid

    from perlinsos_shared.envelope import new_id

    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case hex, 8-4-4-4-12, as str(uuid.UUID)
