"""OpenTelemetry set-up and W3C trace-context helpers shared by every service.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans go there by OTLP; otherwise (embedded
default) they go to `<state dir>/traces/<service>.jsonl` for `perlinsos trace`.

One submission is one trace: the agency's producer span is the parent of registry's
consumer span, whose context the outbox stores beside each row it causes; the relay
publishes under that context, so FastStream's producer span is a child of it and the
next service's consumer span a child of that producer span. An event that coalesces many
messages (premium's summaries) starts its own trace and *links* the messages it covers.

Personal data never leaves a process in a span: every exporter here scrubs NIK-shaped
and phone-shaped digit runs from span names, attributes, events and status text (a
second line of defence; the code puts only pseudonyms and masked values in spans).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from perlinsos_shared.masking import mask_nik, mask_phone
from perlinsos_shared.settings import Settings

TRACE_HEADERS = ("traceparent", "tracestate")

# A NIK is 16 digits; an Indonesian mobile is +62/62/0 then 8 and 8-12 more digits, in any
# spelling (spaces, dashes, dots, a URL-encoded plus). Neither may touch another digit.
_PERSONAL = re.compile(
    r"(?<![\d])(?:"
    r"(?P<nik>\d{16})"
    r"|(?P<phone>(?:\+|%2[bB])?(?:62|0)[\s.\-]?8(?:[\s.\-]?\d){7,12})"
    r")(?![\d])"
)


def _mask_match(m: re.Match[str]) -> str:
    if m.group("nik"):
        return mask_nik(m.group("nik"))
    return mask_phone(re.sub(r"\D", "", m.group("phone")))


# PostgreSQL error details quote the row or key values ("Failing row contains (...)",
# "Key (nik)=(...) already exists"): whatever follows DETAIL is dropped.
_PG_DETAIL = re.compile(r"DETAIL:.*?(?=\nHINT:|$)", re.DOTALL)


_NO_DIGITS = str.maketrans("", "", "0123456789")


def scrub(text: str) -> str:
    """`text` with every NIK-shaped or phone-shaped run masked and database error
    details (which quote row values) removed."""
    if len(text) - len(text.translate(_NO_DIGITS)) < 9 and "DETAIL:" not in text:
        return text  # fewer digits than any phone, and no database error detail
    if len(text) > 256:  # long texts repeat (SQL statements, stack traces): cache them
        return _scrub_cached(text)
    return _scrub(text)


def _scrub(text: str) -> str:
    if "DETAIL:" in text:
        text = _PG_DETAIL.sub("DETAIL: (withheld: may quote personal data)", text)
    return _PERSONAL.sub(_mask_match, text)


@lru_cache(maxsize=1024)
def _scrub_cached(text: str) -> str:
    return _scrub(text)


# Attributes whose values the code itself sets from non-personal ids or fixed words.
SAFE_ATTRIBUTES = frozenset(
    {
        "messaging.system",
        "messaging.destination.name",
        "messaging.operation.type",
        "messaging.operation",
        "messaging.consumer.group.name",
        "messaging.message.id",
        "messaging.kafka.destination.partition",
        "messaging.kafka.offset",
        "messaging.batch.message_count",
        "cloudevents.event_type",
        "perlinsos.participant_id",
        "perlinsos.decision_id",
        "perlinsos.outcome",
        "perlinsos.batch",
        "perlinsos.outbox.id",
        "perlinsos.coalesced_links",
    }
)


def scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, tuple | list):
        return type(value)(scrub_value(v) for v in value)
    return value


def scrub_attributes(attributes: Attributes | Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {
        k: v if k in SAFE_ATTRIBUTES or not isinstance(v, str | tuple | list) else scrub_value(v)
        for k, v in _items(attributes)
    }


def _items(attributes: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """The pairs of an attribute mapping. The SDK's `BoundedAttributes` keeps a plain dict
    (read at C speed; through the mapping protocol each pair is two Python calls); any
    other mapping is read as a mapping."""
    inner = getattr(attributes, "_dict", None)
    return inner.items() if isinstance(inner, dict) else attributes.items()


def span_record(s: ReadableSpan) -> dict[str, Any] | None:
    """One finished span as the JSON record of the embedded trace store (scrubbed)."""
    ctx = s.get_span_context()
    if ctx is None:
        return None
    parent = s.parent
    status = s.status
    scope = s.instrumentation_scope
    # the span's own attribute store, not the read-only view `attributes` wraps it in
    attributes = getattr(s, "_attributes", None) or s.attributes
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": scrub(s.name),
        "kind": s.kind.name,
        "service": s.resource.attributes.get("service.name"),
        "scope": scope.name if scope else None,
        "start_ns": s.start_time,
        "end_ns": s.end_time,
        "status": status.status_code.name,
        "status_description": scrub(status.description) if status.description else None,
        "attributes": scrub_attributes(attributes),
        "events": [
            {"name": scrub(e.name), "attributes": scrub_attributes(e.attributes)} for e in s.events
        ],
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in s.links
        ],
    }


class JsonlSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines: the embedded default's trace store."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            record = span_record(s)
            if record is not None:
                lines.append(orjson.dumps(record, default=str))
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)  # the state dir may be new
            with self._path.open("ab") as f:
                f.write(b"".join(line + b"\n" for line in lines))
        return SpanExportResult.SUCCESS


class ScrubbingSpanExporter(SpanExporter):
    """Wraps another exporter (OTLP): hands it copies of the spans with personal data masked."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([_scrubbed(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _scrubbed(s: ReadableSpan) -> ReadableSpan:
    return ReadableSpan(
        name=scrub(s.name),
        context=s.get_span_context(),
        parent=s.parent,
        resource=s.resource,
        attributes=scrub_attributes(s.attributes),
        events=[
            Event(scrub(e.name), scrub_attributes(e.attributes), e.timestamp) for e in s.events
        ],
        links=list(s.links),
        kind=s.kind,
        status=s.status,
        start_time=s.start_time,
        end_time=s.end_time,
        instrumentation_scope=s.instrumentation_scope,
    )


class _NoOrphanClientSpans(Sampler):
    """Root sampler that drops database spans with no parent (pollers: the outbox relay,
    metric samplers, the SMS sender's idle queries) and defers everything else."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT and attributes and "db.system" in attributes:
            return SamplingResult(Decision.DROP)
        if kind == SpanKind.CLIENT and attributes and "db.system.name" in attributes:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanClientSpans{{{self._delegate.get_description()}}}"


def make_sampler() -> Sampler:
    """Parent-based: a trace is kept or dropped whole, decided where it starts.

    `OTEL_TRACES_SAMPLER=parentbased_traceidratio` (or `traceidratio`) with
    `OTEL_TRACES_SAMPLER_ARG=0.1` keeps one new trace in ten; the default keeps all.
    """
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    root: Sampler = ALWAYS_ON
    if name in ("traceidratio", "parentbased_traceidratio"):
        try:
            ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            ratio = 1.0
        root = TraceIdRatioBased(min(1.0, max(0.0, ratio)))
    elif name in ("always_off", "parentbased_always_off"):
        root = ALWAYS_OFF
    return ParentBased(root=_NoOrphanClientSpans(root))


def setup_tracing(service: str, settings: Settings) -> TracerProvider:
    name = f"perlinsos-{service}"
    provider = TracerProvider(
        resource=Resource.create({"service.name": name, "service.namespace": "perlinsos"}),
        sampler=make_sampler(),
    )
    exporter: SpanExporter
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = ScrubbingSpanExporter(OTLPSpanExporter())
    else:
        exporter = JsonlSpanExporter(settings.state_dir / "traces" / f"{service}.jsonl")
    # Export in batches of 512 (the SDK's default): a batch of 4,096 finished spans and
    # their records held about 60 MB more per process at a high span rate, for no gain
    # in speed. The queue stays long so that a burst never drops a span (traces whole).
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=512)
    )
    trace.set_tracer_provider(provider)
    return provider


def instrument_clients(provider: TracerProvider) -> None:
    """asyncpg and httpx spans (statements are parameterised: no values are captured)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    asyncpg_instr = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
    if not asyncpg_instr.is_instrumented_by_opentelemetry:
        asyncpg_instr.instrument(tracer_provider=provider)
    httpx_instr = HTTPXClientInstrumentor()
    if not httpx_instr.is_instrumented_by_opentelemetry:
        httpx_instr.instrument(tracer_provider=provider)


def current_trace_headers() -> dict[str, str]:
    """The active span's context as W3C headers, to store with an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def span_headers(span: Span) -> dict[str, str]:
    """`span`'s context as W3C headers (for an outbox row written on its behalf): what
    the W3C propagator writes, formatted here once per message without its detours."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return {}
    out = {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}
    if ctx.trace_state:
        out["tracestate"] = ctx.trace_state.to_header()
    return out


_W3C = TraceContextTextMapPropagator()


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
    """The W3C trace context in `headers` (traceparent, tracestate), else an empty one."""
    carrier = {k: v for k in TRACE_HEADERS if (v := headers.get(k)) is not None}
    return _W3C.extract(carrier) if carrier else otel_context.Context()


def headers_of_traceparent(traceparent: str | None) -> dict[str, str]:
    return {"traceparent": traceparent} if traceparent else {}


@contextmanager
def continued(headers: Mapping[str, str]) -> Iterator[None]:
    """Run a block in the trace context stored in `headers` (e.g. beside a database row)."""
    token = otel_context.attach(context_from_headers(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


def start_child_span(
    name: str,
    parent_headers: Mapping[str, str],
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
    tracer: trace.Tracer | None = None,
) -> Span:
    """A span continuing the trace whose context was stored in `parent_headers`."""
    return (tracer or trace.get_tracer("perlinsos")).start_span(
        name, context=context_from_headers(parent_headers), kind=kind, attributes=attributes
    )


MAX_LINKS = 128


def start_linked_span(
    name: str,
    sources: Iterable[Mapping[str, str]],
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
    tracer: trace.Tracer | None = None,
) -> Span:
    """A new trace for work that coalesces many messages: links each source, parents none.

    Use it where one event stands for a batch (premium's summaries): parenting it on the
    last message of the batch would put it in one submission's trace and lie about the rest.
    """
    links: list[Link] = []
    seen: set[int] = set()
    for headers in sources:
        ctx = trace.get_current_span(context_from_headers(headers)).get_span_context()
        if ctx.is_valid and ctx.span_id not in seen:
            seen.add(ctx.span_id)
            links.append(Link(ctx))
            if len(links) >= MAX_LINKS:
                break
    attrs = dict(attributes or {})
    attrs["perlinsos.coalesced_links"] = len(links)
    return (tracer or trace.get_tracer("perlinsos")).start_span(
        name, context=otel_context.Context(), kind=kind, attributes=attrs, links=links
    )


def coalesced_trace_headers(name: str, sources: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Trace headers for an outbox row that stands for many messages (a summary of a
    batch): a short span in a trace of its own that links every source message's span."""
    span = start_linked_span(name, sources)
    span.end()
    return span_headers(span)
