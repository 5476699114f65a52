"""OpenTelemetry set-up and W3C trace-context helpers shared by every service.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans go there by OTLP; otherwise (embedded
default) they go to `<state dir>/traces/<service>.jsonl` for `perlinsos trace`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from perlinsos_shared.settings import Settings

TRACE_HEADERS = ("traceparent", "tracestate")


class JsonlSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines: the embedded default's trace store."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            ctx = s.get_span_context()
            if ctx is None:
                continue
            parent = s.parent
            lines.append(
                json.dumps(
                    {
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_span_id": format(parent.span_id, "016x") if parent else None,
                        "name": s.name,
                        "kind": s.kind.name,
                        "service": s.resource.attributes.get("service.name"),
                        "start_ns": s.start_time,
                        "end_ns": s.end_time,
                        "status": s.status.status_code.name,
                        "status_description": s.status.description,
                        "attributes": dict(s.attributes or {}),
                        "events": [
                            {"name": e.name, "attributes": dict(e.attributes or {})}
                            for e in s.events
                        ],
                        "links": [
                            {
                                "trace_id": format(link.context.trace_id, "032x"),
                                "span_id": format(link.context.span_id, "016x"),
                            }
                            for link in s.links
                        ],
                    },
                    default=str,
                )
            )
        with self._lock, self._path.open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


def setup_tracing(service: str, settings: Settings) -> TracerProvider:
    name = f"perlinsos-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporter: SpanExporter
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = JsonlSpanExporter(settings.state_dir / "traces" / f"{service}.jsonl")
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=4096)
    )
    trace.set_tracer_provider(provider)
    return provider


def current_trace_headers() -> dict[str, str]:
    """The active span's context as W3C headers, to store with an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
    return propagate.extract({k: v for k, v in headers.items() if k in TRACE_HEADERS})
