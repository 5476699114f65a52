"""The public contracts of DESIGN.md, checked against the code that carries them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perlinsos_shared.asyncapi import document
from perlinsos_shared.envelope import CloudEvent, RawEnvelope, encode, make_event
from perlinsos_shared.events import IntakeRejected, PremiumSummary, Reason
from perlinsos_shared.masking import mask_nik
from perlinsos_shared.topics import CATALOGUE, all_topic_names, by_name

ROOT = Path(__file__).resolve().parents[1]


def test_asyncapi_document_is_generated_from_the_code() -> None:
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert committed == document(), "docs/asyncapi.json is stale: run `make asyncapi`"


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
