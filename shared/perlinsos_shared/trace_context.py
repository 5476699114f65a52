"""W3C trace-context helpers: span contexts written to and read from stored headers.

An outbox row keeps the context of the span that caused it as W3C headers; the next
service continues the trace from them, and work that coalesces many messages starts a
trace of its own that links them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes


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
