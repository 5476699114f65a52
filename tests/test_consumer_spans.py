"""Spans on the short path (`ConsumerSpans` and the tracers of a `ServiceTracerProvider`)
are the spans the SDK's tracer makes: same trace, parent, sampling decision, attributes,
links, resource and scope, handed to every span processor of the provider."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from perlinsos_shared.lean_spans import ConsumerSpans, ServiceTracerProvider
from perlinsos_shared.sampling import make_sampler
from perlinsos_shared.trace_context import context_from_headers, parent_from_headers, span_headers
from perlinsos_shared.trace_export import span_record

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ATTRIBUTES = {
    "messaging.system": "kafka",
    "messaging.destination.name": "registry.participants.v1",
    "messaging.kafka.offset": 12,
    "perlinsos.participant_id": "p-1",
}


def _provider() -> tuple[ServiceTracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = ServiceTracerProvider(Resource.create({"service.name": "perlinsos-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _comparable(span: ReadableSpan) -> dict[str, Any]:
    record = span_record(span)
    assert record is not None
    for varying in ("span_id", "start_ns", "end_ns"):
        record.pop(varying)
    return record


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": PARENT},
        {"traceparent": PARENT, "tracestate": "vendor=abc,other=1"},
        {"traceparent": PARENT.replace("-01", "-03")},  # sampled, random trace id
        {"traceparent": PARENT.replace("-01", "-00")},  # not sampled: nothing exported
        {},  # no parent: a new trace, the root sampler decides
        {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"},  # invalid: a new trace
    ],
)
@pytest.mark.parametrize("kind", [SpanKind.CONSUMER, SpanKind.CLIENT])  # CLIENT: `sms send`
def test_short_path_makes_the_sdk_span(headers: dict[str, str], kind: SpanKind) -> None:
    provider, exporter = _provider()
    short = ConsumerSpans("perlinsos.consumer", provider=provider)
    sdk_tracer = provider.get_tracer("perlinsos.consumer")
    made = [
        short.start("t process", headers, kind=kind, attributes=dict(ATTRIBUTES)),
        sdk_tracer.start_span(
            "t process",
            context=context_from_headers(headers),
            kind=kind,
            attributes=dict(ATTRIBUTES),
        ),
    ]
    for span in made:
        span.set_attribute("perlinsos.batch", "b-1")
        span.end()
    lean, sdk = (s.get_span_context() for s in made)
    assert (lean.trace_flags, lean.trace_state) == (sdk.trace_flags, sdk.trace_state)
    assert span_headers(made[0]).keys() == span_headers(made[1]).keys()
    if headers.get("traceparent") == PARENT:
        assert lean.trace_id == sdk.trace_id == int(PARENT.split("-")[1], 16)
    finished = exporter.get_finished_spans()
    if not sdk.trace_flags.sampled:
        assert finished == () and isinstance(made[0], NonRecordingSpan)
        return
    assert len(finished) == 2
    short_record, sdk_record = (_comparable(s) for s in finished)
    if parent_from_headers(headers) is None:  # each started a trace of its own
        assert short_record.pop("trace_id") != sdk_record.pop("trace_id")
    assert short_record == sdk_record


def test_short_path_span_records_status_and_events_and_ignores_changes_after_end() -> None:
    provider, exporter = _provider()
    span = ConsumerSpans("c", provider=provider).start("t process", {}, attributes={})
    span.add_event("exception", {"exception.type": "ValueError"})
    span.set_status(Status(StatusCode.ERROR, "ValueError"))
    span.set_attribute("perlinsos.dead_lettered", True)
    span.set_attribute("list", ["a", 1])  # not a plain value: cleaned as the SDK does
    span.end()
    span.set_attribute("late", 1)
    span.end()  # once only
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code is StatusCode.ERROR
    assert [e.name for e in finished.events] == ["exception"]
    assert dict(finished.attributes or {}) == {"perlinsos.dead_lettered": True, "list": ("a", 1)}


def test_sdk_disabled_makes_no_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider, exporter = _provider()
    span = ConsumerSpans("c", provider=provider).start("t", {"traceparent": PARENT}, attributes={})
    span.end()
    assert not span.is_recording() and exporter.get_finished_spans() == ()


def test_without_a_service_provider_the_global_tracer_makes_the_span() -> None:
    span = ConsumerSpans("c").start("t process", {"traceparent": PARENT}, attributes={})
    span.end()  # whatever the global provider is (none: a non-recording span)
    assert span.get_span_context().trace_id in (0, int(PARENT.split("-")[1], 16))


@pytest.mark.parametrize(
    "traceparent",
    [
        PARENT,
        " " + PARENT + "\t",
        PARENT.upper(),
        "ff" + PARENT[2:],
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
        PARENT + "-extra",
        "01" + PARENT[2:] + "-extra",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
        "garbage",
        "",
    ],
)
def test_parent_from_headers_reads_what_the_w3c_propagator_reads(traceparent: str) -> None:
    headers = {"traceparent": traceparent, "tracestate": "a=1,b=2"}
    from opentelemetry import trace

    expected = trace.get_current_span(
        TraceContextTextMapPropagator().extract(headers)
    ).get_span_context()
    parent = parent_from_headers(headers)
    if not expected.is_valid:
        assert parent is None
    else:
        assert parent == expected
        assert parent.trace_state == expected.trace_state


def _sdk_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    """The SDK's own provider, configured as `ServiceTracerProvider` is."""
    sdk = TracerProvider(
        resource=Resource.create({"service.name": "perlinsos-test"}), sampler=make_sampler()
    )
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    return sdk


@pytest.mark.parametrize("parent_flags", ["01", "03", "00", None])  # None: no current span
@pytest.mark.parametrize("n_links", [0, 3, 130])  # 130: over the SDK's limit of 128
@pytest.mark.parametrize(
    "attributes",
    [
        ATTRIBUTES,
        {**ATTRIBUTES, "list": ["a", "b"], "none": None, "bytes": b"x", "": 1},  # cleaned
        {"db.system": "postgresql", "db.statement": "SELECT 1"},  # an orphan: dropped
    ],
)
def test_the_service_tracer_makes_the_sdk_span(
    parent_flags: str | None, n_links: int, attributes: dict[str, Any]
) -> None:
    """Spans of the provider's tracers (the consumer's batch span, SQL statements,
    FastStream's): the records the SDK's tracer makes, under the current span or a given
    context, with links, cleaned attributes and the sampler's decision."""
    exporter = InMemorySpanExporter()
    lean_provider = ServiceTracerProvider(Resource.create({"service.name": "perlinsos-test"}))
    lean_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracers = [
        lean_provider.get_tracer("scope", "1.2", "https://schema"),
        _sdk_provider(exporter).get_tracer("scope", "1.2", "https://schema"),
    ]
    assert type(tracers[0]) is not type(tracers[1])
    assert lean_provider.get_tracer("scope", "1.2", "https://schema") is tracers[0]
    links = [
        Link(SpanContext(0x1234, i + 1, is_remote=False, trace_flags=TraceFlags(1)))
        for i in range(n_links)
    ]
    links.append(Link(SpanContext(0, 0, is_remote=False)))  # invalid: never kept
    headers = {} if parent_flags is None else {"traceparent": PARENT[:-2] + parent_flags}
    kind = SpanKind.CLIENT if "db.system" in attributes else SpanKind.INTERNAL
    made = []
    with trace.use_span(trace.get_current_span(context_from_headers(headers))):
        for tracer in tracers:  # under the current span
            made.append(tracer.start_span("t", kind=kind, attributes=attributes, links=links))
    for tracer in tracers:  # under a given context, at a given time
        made.append(
            tracer.start_span(
                "t", context_from_headers(headers), kind, attributes, links, start_time=5
            )
        )
    for span in made:
        span.set_attribute("perlinsos.batch", "b-1")
        span.end()
    contexts = [s.get_span_context() for s in made]
    for lean, sdk in (contexts[0:2], contexts[2:4]):
        assert (lean.trace_flags, lean.trace_state) == (sdk.trace_flags, sdk.trace_state)
        if parent_flags is not None:
            assert lean.trace_id == sdk.trace_id == int(PARENT.split("-")[1], 16)
    finished = exporter.get_finished_spans()
    if not contexts[1].trace_flags.sampled:
        assert finished == () and isinstance(made[0], NonRecordingSpan)
        return
    records = [_comparable(s) for s in finished]
    if parent_flags is None:  # each started a trace of its own
        for record in records:
            record.pop("trace_id")
    assert records[0] == records[1] and records[2] == records[3]
    assert len(records[0]["links"]) == min(n_links, 128)
    assert finished[2].start_time == finished[3].start_time == 5
    assert [s.instrumentation_scope for s in finished[0:2]] == [
        InstrumentationScope("scope", "1.2", "https://schema")
    ] * 2


def test_the_service_tracer_records_exceptions_as_the_sdk_does() -> None:
    exporter = InMemorySpanExporter()
    lean_provider = ServiceTracerProvider(Resource.create({"service.name": "perlinsos-test"}))
    lean_provider.add_span_processor(SimpleSpanProcessor(exporter))
    for tracer in (lean_provider.get_tracer("s"), _sdk_provider(exporter).get_tracer("s")):
        with pytest.raises(ValueError), tracer.start_as_current_span("current"):
            raise ValueError("one")
        with pytest.raises(ValueError), tracer.start_span("with"):
            raise ValueError("two")
        with (
            pytest.raises(ValueError),
            tracer.start_span("quiet", record_exception=False, set_status_on_exception=False),
        ):
            raise ValueError("three")
    finished = exporter.get_finished_spans()
    lean, sdk = finished[:3], finished[3:]
    for a, b in zip(lean, sdk, strict=True):
        assert (a.name, a.status.status_code, a.status.description) == (
            b.name,
            b.status.status_code,
            b.status.description,
        )
        assert [(e.name, dict(e.attributes or {})) for e in a.events] == [
            (e.name, dict(e.attributes or {})) for e in b.events
        ]
