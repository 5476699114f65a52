"""Observability plumbing on plain values: masking in spans and logs, the trace tree,
the sampler, coalesced spans and the Prometheus text of the platform metrics."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError

from perlinsos_cli.trace import build_tree, describe, find_trace_ids, load_spans, render
from perlinsos_shared.consumer import correlation_attributes
from perlinsos_shared.logs import JsonFormatter
from perlinsos_shared.metrics import PlatformMetrics
from perlinsos_shared.sampling import make_sampler
from perlinsos_shared.scrubbing import _ascii_digits, _scrub, scrub, scrub_attributes
from perlinsos_shared.trace_context import span_headers, start_child_span, start_linked_span
from perlinsos_shared.trace_export import JsonlSpanExporter, span_record

NIK = "2171054507900003"
PERSON = {"nik": "Siti " + NIK}


@pytest.mark.parametrize(
    "spelling",
    ["081234567890", "+6281234567890", "6281234567890", "62 812-3456-7890", "0812.3456.7890"],
)
def test_scrub_masks_every_phone_spelling(spelling: str) -> None:
    out = scrub(f"to {spelling} now")
    assert "34567" not in out
    assert out.startswith("to ") and out.endswith(" now")


def test_scrub_masks_nik_and_url_encoded_phone_but_keeps_other_numbers() -> None:
    out = scrub(f"nik={NIK}&To=%2B6281234567890&offset=12345&id=2171-2025-000001")
    assert NIK not in out and "2171054507900003" not in out
    assert "217105" in out  # first six digits stay, as in rejections
    assert "81234567890" not in out
    assert "offset=12345" in out and "2171-2025-000001" in out


def test_scrub_drops_database_error_details() -> None:
    text = 'null value in column "reasons"\nDETAIL:  Failing row contains (x, Harsanto, 6285).'
    out = scrub(text)
    assert "Harsanto" not in out and 'column "reasons"' in out


def test_correlation_attributes_take_ids_never_personal_fields() -> None:
    data = {
        "agency": "DISHUB",
        "request_id": "DISHUB-2025-000001",
        "nik": NIK,
        "full_name": "Siti Aminah",
        "phone": "081234567890",
    }
    attrs = correlation_attributes(data)
    assert attrs == {"perlinsos.agency": "DISHUB", "perlinsos.request_id": "DISHUB-2025-000001"}
    assert correlation_attributes("not a dict") == {}


class _Model(BaseModel):
    nik: int


def _log_line(record: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter("perlinsos-test").format(record)
    assert "\n" not in line  # one line per event
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_json_log_line_carries_trace_ids_and_masks_personal_data() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    try:
        _Model.model_validate(PERSON)
    except ValidationError:
        exc_info = sys.exc_info()
    with tracer.start_as_current_span("work") as span:
        record = logging.LogRecord(
            "perlinsos.test", logging.ERROR, __file__, 1, "sent to %s", ("+6281234567890",), None
        )
        record.exc_info = exc_info
        record.phone = "081234567890"
        out = _log_line(record)
        ctx = span.get_span_context()
    assert out["trace_id"] == format(ctx.trace_id, "032x")
    assert out["span_id"] == format(ctx.span_id, "016x")
    text = json.dumps(out)
    assert "81234567890" not in text
    assert NIK not in text and "Siti" not in text  # validation errors never quote input
    assert "nik" in str(out["exception"])


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "perlinsos-test"}), sampler=make_sampler()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_sampler_drops_orphan_database_spans_but_keeps_children() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    db = {"db.system": "postgresql"}
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=db):
        pass
    with (
        tracer.start_as_current_span("registry.intake.v1 process", kind=SpanKind.CONSUMER),
        tracer.start_as_current_span("INSERT", kind=SpanKind.CLIENT, attributes=db),
    ):
        pass
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["INSERT", "registry.intake.v1 process"]


def test_span_record_scrubs_attributes_events_and_names() -> None:
    provider, exporter = _provider()
    with provider.get_tracer("t").start_as_current_span(
        f"send {NIK}", attributes={"http.url": "https://x/?to=6281234567890"}
    ) as span:
        span.add_event("exception", {"exception.message": f"duplicate {NIK}"})
    record = span_record(exporter.get_finished_spans()[0])
    assert record is not None
    text = json.dumps(record)
    assert NIK not in text and "81234567890" not in text


@pytest.mark.parametrize(
    "text",
    [
        "kafka",
        "",
        "１２３４５６７８９０１２３４５６",  # wide digits: not ASCII ones, left as they are
        "a\udcff 2171054507900003",  # a lone surrogate beside a NIK
        "id 12345678 and 2026",  # 12 digits in all, no run of a phone or NIK
        "INSERT INTO t VALUES ($1, $2, $3)" * 10,  # long: cached
        "DETAIL: Key (nik)=(x) already exists",
    ],
)
def test_scrub_counts_ascii_digits_whatever_the_text(text: str) -> None:
    out = scrub(text)
    assert "2171054507900003" not in out and "DETAIL: Key" not in out
    if sum(c in "0123456789" for c in text) < 9 and "DETAIL:" not in text:
        assert out == text


_SCRUBBABLE = st.text(alphabet=st.sampled_from("0123456789 +-.8%2bDETAIL:xé\n"), max_size=300)


@settings(max_examples=300, deadline=None)
@given(text=_SCRUBBABLE, repeat=st.booleans())
def test_scrub_is_the_pattern_whether_cached_or_not(text: str, repeat: bool) -> None:
    """Short texts are looked up once scrubbed, long ones counted first: the same text as
    the patterns themselves make, every time."""
    expected = _scrub(text) if _ascii_digits(text) >= 9 or "DETAIL:" in text else text
    assert scrub(text) == expected
    if repeat:
        assert scrub(text) == expected


def test_scrub_attributes_keeps_the_order_and_safe_values() -> None:
    attributes = {
        "perlinsos.request_id": f"r {NIK}",
        "messaging.message.id": NIK,  # safe: the code sets it from an id, never personal
        "list": ["a", f"b {NIK}"],
        "n": 5,
    }
    out = scrub_attributes(BoundedAttributes(attributes=attributes))
    assert list(out) == list(attributes)
    assert out["messaging.message.id"] == NIK and out["n"] == 5
    assert NIK not in out["perlinsos.request_id"] and NIK not in out["list"][1]
    assert isinstance(out["list"], tuple)  # as the SDK stores a sequence
    assert scrub_attributes(attributes)["list"][0] == "a"


def test_the_trace_store_writes_one_json_line_per_span(tmp_path: Path) -> None:
    exporter = JsonlSpanExporter(tmp_path / "traces" / "t.jsonl")
    provider = TracerProvider(resource=Resource.create({"service.name": "perlinsos-t"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    tracer.start_span("first").end()
    shutil.rmtree(tmp_path / "traces")  # the state directory removed under a running service
    tracer.start_span(f"second {NIK}").end()
    tracer.start_span("third").end()
    lines = (tmp_path / "traces" / "t.jsonl").read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    assert [r["name"] for r in records] == ["second 217105********03", "third"]
    assert all(line.endswith(b"\n") for line in lines)
    assert {r["service"] for r in records} == {"perlinsos-t"}


def test_child_and_linked_spans() -> None:
    provider, _ = _provider()
    tracer = provider.get_tracer("t")
    parents = []
    for i in range(3):
        with tracer.start_as_current_span(f"decision {i}", kind=SpanKind.CONSUMER) as s:
            parents.append(span_headers(s))
    child = start_child_span("sms send", parents[0], tracer=tracer)
    child.end()
    linked = start_linked_span("summaries", [*parents, parents[0]], tracer=tracer)
    linked.end()
    # the child continues the first decision's trace
    assert child.get_span_context().trace_id == int(parents[0]["traceparent"].split("-")[1], 16)
    # the coalesced span starts its own trace and links each source once
    assert linked.get_span_context().trace_id not in {
        int(p["traceparent"].split("-")[1], 16) for p in parents
    }
    assert len(linked.links) == 3  # type: ignore[attr-defined]


def _span(tid: str, sid: str, parent: str | None, name: str, service: str, start: int) -> str:
    return json.dumps(
        {
            "trace_id": tid,
            "span_id": sid,
            "parent_span_id": parent,
            "name": name,
            "kind": "CONSUMER",
            "service": f"perlinsos-{service}",
            "start_ns": start,
            "end_ns": start + 2_000_000,
            "status": "ERROR" if service == "notify" else "UNSET",
            "status_description": "timeout" if service == "notify" else None,
            "attributes": {"perlinsos.request_id": "DISHUB-1"} if service == "registry" else {},
            "events": [],
            "links": [],
        }
    )


def test_trace_tree_from_the_store(tmp_path: pytest.TempPathFactory) -> None:
    t1, t2 = "a" * 32, "b" * 32
    store = tmp_path / "traces"  # type: ignore[operator]
    store.mkdir()
    (store / "registry.jsonl").write_text(
        _span(t1, "1" * 16, None, "registry.intake.v1 process", "registry", 10) + "\n"
    )
    (store / "notify.jsonl").write_text(
        _span(t1, "2" * 16, "1" * 16, "eligibility.decisions.v1 process", "notify", 20)
        + "\n"
        + _span(t2, "3" * 16, None, "other", "premium", 5)
        + "\n"
    )
    files = sorted(store.glob("*.jsonl"))
    assert find_trace_ids(files, "DISHUB-1") == [t1]
    spans = load_spans(files, {t1})[t1]
    roots = build_tree(spans)
    assert len(roots) == 1 and roots[0].children[0].span["service"] == "perlinsos-notify"
    assert "ERROR timeout" in describe(roots[0].children[0].span, 10)
    assert render(t1, spans).label is not None


def test_platform_metrics_render_as_prometheus_text() -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry, scope_info_enabled=False)]
    )
    m = PlatformMetrics(meter=provider.get_meter("perlinsos.platform"))
    m.consumed.add(5, {"topic": "registry.intake.v1"})
    m.dead_letters.add(1, {"topic": "registry.intake.v1"})
    m.lag[("registry.intake.v1", 3)] = 42
    m.outbox_backlog = 7
    m.batch_duration.record(0.02, {"topic": "registry.intake.v1"})
    text = generate_latest(registry).decode()
    assert 'perlinsos_messages_consumed_total{topic="registry.intake.v1"} 5.0' in text
    assert 'perlinsos_dead_letters_total{topic="registry.intake.v1"} 1.0' in text
    assert 'perlinsos_consumer_lag{partition="3",topic="registry.intake.v1"} 42.0' in text
    assert "perlinsos_outbox_backlog 7.0" in text
    assert "perlinsos_consumer_batch_duration_seconds_bucket" in text
