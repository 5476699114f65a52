"""Span exporters: the embedded trace store's JSON lines, and a scrubbing wrapper for OTLP.

Every span is scrubbed (`perlinsos_shared.scrubbing`) on its way out of the process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from perlinsos_shared.scrubbing import scrub, scrub_attributes

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
