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
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from time import time_ns
from types import TracebackType
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SynchronousMultiSpanProcessor,
    Tracer,
    TracerProvider,
)
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
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes

from perlinsos_shared.masking import mask_nik, mask_phone
from perlinsos_shared.settings import Settings

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


_DIGITS = b"0123456789"


def _ascii_digits(text: str) -> int:
    """How many of `text`'s characters are ASCII digits. Counted on its UTF-8 bytes (no
    other character's bytes are ASCII; `surrogatepass` encodes any str): a C pass that
    deletes bytes, where `str.translate` looks every character up in a mapping (about
    0.7 µs for a 236-character SQL statement, against 4.8)."""
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw) - len(raw.translate(None, _DIGITS))


def scrub(text: str) -> str:
    """`text` with every NIK-shaped or phone-shaped run masked and database error
    details (which quote row values) removed."""
    if len(text) <= _SHORT:
        return _scrub_short(text)
    if _ascii_digits(text) < 9 and "DETAIL:" not in text:
        return text  # fewer digits than any phone, and no database error detail
    return _scrub_cached(text)  # long texts repeat (SQL statements, stack traces)


_SHORT = 256


@lru_cache(maxsize=4096)
def _scrub_short(text: str) -> str:
    """Short texts mostly repeat (span names, SQL statements, agencies, the database's
    name and user): looked up rather than counted and searched again for every span."""
    if _ascii_digits(text) < 9 and "DETAIL:" not in text:
        return text
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
    """A copy of `attributes` with the values of every attribute not in `SAFE_ATTRIBUTES`
    scrubbed (in their order). The SDK's `BoundedAttributes` keeps a plain dict, copied
    at C speed; any other mapping is copied as a mapping."""
    if not attributes:
        return {}
    inner = getattr(attributes, "_dict", None)
    out = dict(inner if isinstance(inner, dict) else attributes)
    for key in out.keys() - SAFE_ATTRIBUTES:
        value = out[key]
        if isinstance(value, _SCRUBBED_TYPES):
            out[key] = scrub_value(value)
    return out


_SCRUBBED_TYPES = (str, tuple, list)


_KIND_NAMES = {kind: kind.name for kind in SpanKind}
_STATUS_NAMES = {code: code.name for code in StatusCode}


def span_record(s: ReadableSpan) -> dict[str, Any] | None:
    """One finished span as the JSON record of the embedded trace store (scrubbed)."""
    ctx = s.get_span_context()
    if ctx is None:
        return None
    # the span's own stores (`ReadableSpan.__init__` sets them), not the properties that
    # read them, nor the read-only copies and views some properties make
    parent = s._parent
    status = s._status
    scope = s._instrumentation_scope
    events = s._events
    links = s._links
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": scrub(s._name),
        "kind": _KIND_NAMES[s._kind],
        "service": s._resource.attributes.get("service.name"),
        "scope": scope.name if scope else None,
        "start_ns": s._start_time,
        "end_ns": s._end_time,
        "status": _STATUS_NAMES[status.status_code],
        "status_description": scrub(status.description) if status.description else None,
        "attributes": scrub_attributes(s._attributes),
        "events": [
            {"name": scrub(e.name), "attributes": scrub_attributes(e.attributes)} for e in events
        ]
        if events
        else [],
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in links
        ]
        if links
        else [],
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
                lines.append(orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE))
        data = b"".join(lines)
        with self._lock:
            try:
                f = self._path.open("ab")
            except FileNotFoundError:  # the state dir may be new
                self._path.parent.mkdir(parents=True, exist_ok=True)
                f = self._path.open("ab")
            with f:
                f.write(data)
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
    provider = ServiceTracerProvider(
        Resource.create({"service.name": name, "service.namespace": "perlinsos"})
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


# The W3C propagator's pattern and rules (`TraceContextTextMapPropagator.extract`), applied
# here with the pattern compiled once: the propagator passes its compiled pattern through
# `re.search`, which looks it up in re's cache on every message.
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*$"
)
_NO_TRACE_ID = "0" * 32
_NO_SPAN_ID = "0" * 16
_MAX_TRACESTATE = 512  # the propagator's limit: a longer tracestate is ignored


def parent_from_headers(headers: Mapping[str, str]) -> SpanContext | None:
    """The remote span context in W3C `traceparent`/`tracestate` headers, or None when
    there is none or it is malformed (the W3C propagator's rules)."""
    header = headers.get("traceparent")
    if not header:
        return None
    match = _TRACEPARENT.search(header)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _NO_TRACE_ID or span_id == _NO_SPAN_ID or version == "ff":
        return None
    if version == "00" and rest:
        return None
    state_header = headers.get("tracestate")
    state = None
    if state_header is not None and len(state_header) <= _MAX_TRACESTATE:
        state = TraceState.from_header([state_header])
    return SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
        trace_state=state,
    )


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
    """The W3C trace context in `headers` (traceparent, tracestate), else an empty one."""
    parent = parent_from_headers(headers)
    if parent is None:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())


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
    """A new trace for work that coalesces many messages: links each source (the span
    whose context each of `sources` holds as W3C headers), parents none.

    Use it where one event stands for a batch (premium's summaries): parenting it on the
    last message of the batch would put it in one submission's trace and lie about the rest.
    """
    return start_span_linking(
        name, map(_context_of, sources), kind=kind, attributes=attributes, tracer=tracer
    )


def _context_of(headers: Mapping[str, str]) -> SpanContext:
    return trace.get_current_span(context_from_headers(headers)).get_span_context()


def start_span_linking(
    name: str,
    contexts: Iterable[SpanContext],
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
    tracer: trace.Tracer | None = None,
) -> Span:
    """`start_linked_span` of the sources' span contexts themselves (a consumer's
    messages' spans: no W3C headers written and read back)."""
    links: list[Link] = []
    seen: set[int] = set()
    for ctx in contexts:
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


def coalesced_span_headers(name: str, contexts: Iterable[SpanContext]) -> dict[str, str]:
    """Trace headers for an outbox row that stands for many messages (a summary of a
    batch): a short span in a trace of its own that links each source message's span."""
    span = start_span_linking(name, contexts)
    span.end()
    return span_headers(span)


# --- spans on a short path ---------------------------------------------------------------
#
# Every message a service consumes gets a CONSUMER span (five per enrolment across the
# services), every batch a span of its own and one per SQL statement, every fetch two of
# FastStream's. Made by the SDK's tracer, each one costs a context object for its parent, a
# sampling call, an attribute store that checks and copies every attribute under a lock,
# two bounded lists (events, links) with a lock each, a lock to start, a lock to end and a
# copy of the span for the processors: more than the message's own handling in premium.
# The tracers of a `ServiceTracerProvider` (`_LeanTracer`) and `ConsumerSpans` make the
# same span (same sampler decision, ids, parent, attributes, links, resource and scope;
# handed to the same span processors when it ends) with plain values: attributes of plain
# types are stored as given (others are cleaned as the SDK cleans them). The SDK's
# attribute and link-attribute limits (`OTEL_SPAN_ATTRIBUTE_*`, `OTEL_LINK_ATTRIBUTE_*`) and
# its own internal metrics (`OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`) are not applied:
# the spans here carry a dozen short values at most.


class ServiceTracerProvider(TracerProvider):
    """The SDK's provider with `make_sampler`'s sampler, whose tracers make their spans on
    the short path; it holds on to its span processors so that `ConsumerSpans` can hand
    them the spans it makes."""

    def __init__(self, resource: Resource) -> None:
        self.processors = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        super().__init__(
            resource=resource, sampler=make_sampler(), active_span_processor=self.processors
        )
        # `OTEL_SDK_DISABLED=true`: the provider's tracers make no spans; nor does the short path
        self.enabled = os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() != "true"
        self._lean: dict[InstrumentationScope, _LeanTracer] = {}

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        """The SDK's tracer for this scope (its configuration and scope), making its
        spans on the short path."""
        sdk = super().get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        if not isinstance(sdk, Tracer):  # disabled: the SDK's no-op tracer
            return sdk
        scope = sdk._instrumentation_scope
        lean = self._lean.get(scope)
        if lean is None:
            lean = self._lean.setdefault(scope, _LeanTracer(self, sdk))
        return lean


class _LeanTracer(Tracer):
    """The SDK's tracer (same sampler, resource, processors, ids and scope) whose recording
    spans are `_LeanSpan`s."""

    def __init__(self, provider: ServiceTracerProvider, sdk: Tracer) -> None:
        super().__init__(
            sdk.sampler,
            sdk.resource,
            sdk.span_processor,
            sdk.id_generator,
            sdk.instrumentation_info,
            sdk._span_limits,
            sdk._instrumentation_scope,
            _tracer_config=sdk._tracer_config,
        )
        self._provider = provider

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        if not self._is_enabled():
            return super().start_span(
                name, context, kind, attributes, links, start_time, record_exception,
                set_status_on_exception,
            )  # fmt: skip
        parent = trace.get_current_span(context).get_span_context()
        span = _start_span(
            self._provider,
            self._instrumentation_scope,
            name,
            parent if parent.is_valid else None,
            kind,
            _plain(attributes),
            links or (),
            start_time,
        )
        if isinstance(span, _LeanSpan):
            span._record_exception = record_exception
            span._set_status_on_exception = set_status_on_exception
        return span


def _plain(attributes: Attributes) -> dict[str, Any]:
    """A span's own copy of `attributes`: as given when every value is of a plain type,
    else cleaned as the SDK cleans them (sequences made tuples, invalid ones dropped)."""
    if not attributes:
        return {}
    if "" not in attributes and all(type(v) in _PLAIN_TYPES for v in attributes.values()):
        return dict(attributes)
    return dict(BoundedAttributes(attributes=attributes, immutable=False))


_PLAIN_VALUES = (str, int, bool, float)
_PLAIN_TYPES = frozenset(_PLAIN_VALUES)
_UNSET = Status(StatusCode.UNSET)


def _start_span(
    provider: ServiceTracerProvider,
    scope: InstrumentationScope,
    name: str,
    parent: SpanContext | None,
    kind: SpanKind,
    attributes: dict[str, Any],
    links: Sequence[Link] = (),
    start_time: int | None = None,
) -> Span:
    """What the SDK's `Tracer.start_span` makes under `parent` (None: a new trace), with
    `attributes` (plain values, the span's own from now on)."""
    ids = provider.id_generator
    if parent is not None:
        # `make_sampler` is parent-based: a parent's decision is the span's, with its
        # trace state (what the sampler answers, without the context object it would
        # have to be asked with)
        trace_id = parent.trace_id
        flags = parent.trace_flags & (TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
        state: TraceState | None = parent.trace_state
    else:  # a new trace: the root sampler decides (one in ten, say)
        trace_id = ids.generate_trace_id()
        result = provider.sampler.should_sample(
            otel_context.Context(), trace_id, name, kind, attributes, links
        )
        flags = TraceFlags.DEFAULT
        if result.decision is Decision.RECORD_AND_SAMPLE:
            flags = TraceFlags.SAMPLED
        if ids.is_trace_id_random():
            flags |= TraceFlags.RANDOM_TRACE_ID
        state = result.trace_state
        if len(result.attributes) != len(attributes):  # the sampler added some
            attributes = {**attributes, **result.attributes}
    own = SpanContext(
        trace_id,
        ids.generate_span_id(),
        is_remote=False,
        trace_flags=TraceFlags(flags),
        trace_state=state,
    )
    if not flags & TraceFlags.SAMPLED:
        return NonRecordingSpan(own)
    # the links the SDK keeps (`Span._new_links`): a valid context, or attributes or a
    # trace state; the last `MAX_LINKS` of them (its default limit)
    kept = tuple(
        link
        for link in links
        if link.context.is_valid or link.attributes or link.context.trace_state
    )[-MAX_LINKS:]
    span = _LeanSpan(provider, name, own, parent, kind, attributes, scope, kept, start_time)
    provider.processors.on_start(span, parent_context=None)  # type: ignore[arg-type]
    return span


class _LeanSpan(Span, ReadableSpan):
    """A recording span of plain values that is its own finished record (`ReadableSpan`)
    once ended (nothing changes it after `end`)."""

    _record_exception = True
    _set_status_on_exception = True

    def __init__(
        self,
        provider: ServiceTracerProvider,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        scope: InstrumentationScope,
        links: tuple[Link, ...] = (),
        start_time: int | None = None,
    ) -> None:
        self._processors = provider.processors
        self._name = name
        self._own = context
        self._context = context
        self._parent = parent
        self._kind = kind
        self._values = attributes
        self._attributes = attributes
        self._events: list[Event] = []
        self._links = links
        self._resource = provider.resource
        self._instrumentation_info = None
        self._instrumentation_scope = scope
        self._status = _UNSET
        self._start_time = start_time if start_time is not None else time_ns()
        self._end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._own

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None or not key or not isinstance(key, str):
            return
        if isinstance(value, _PLAIN_VALUES):
            self._values[key] = value
        else:  # sequences and odd types: as the SDK cleans them
            self._values.update(BoundedAttributes(attributes={key: value}, immutable=False))

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            self._events.append(Event(name, BoundedAttributes(attributes=attributes), timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._end_time is None and context.is_valid:
            self._links = (*self._links, Link(context, BoundedAttributes(attributes=attributes)))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return  # OK is final (as in the SDK)
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        recorded.update(attributes or {})
        self.add_event("exception", recorded, timestamp)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Ends the span; an exception escaping a `with span:` block is recorded as the
        SDK's span records it."""
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time_ns()
        self._processors.on_end(self)


class ConsumerSpans:
    """Spans of one instrumentation scope started from stored W3C headers: on the short
    path in a service whose tracing `setup_tracing` made (a `ServiceTracerProvider`),
    else by the provider's own tracer (the same spans; e.g. under a test's provider)."""

    def __init__(self, scope: str, provider: trace.TracerProvider | None = None) -> None:
        self._scope_name = scope
        self._scope = InstrumentationScope(scope)
        self._provider = provider  # None: the global one, whenever it is set

    def start(
        self,
        name: str,
        parent_headers: Mapping[str, str],
        *,
        kind: SpanKind = SpanKind.CONSUMER,
        attributes: dict[str, Any],
    ) -> Span:
        """A span continuing the trace in `parent_headers`; `attributes` (plain values)
        become the span's own."""
        provider = self._provider or trace.get_tracer_provider()
        if not isinstance(provider, ServiceTracerProvider) or not provider.enabled:
            return provider.get_tracer(self._scope_name).start_span(
                name, context=context_from_headers(parent_headers), kind=kind, attributes=attributes
            )
        return _start_span(
            provider, self._scope, name, parent_from_headers(parent_headers), kind, attributes
        )
