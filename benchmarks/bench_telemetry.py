"""What tracing costs per message on the hot path, without a broker or database.

Per consumed message a service opens and ends one CONSUMER span (with its correlation
attributes and trace headers for the outbox); per published row the relay opens one
PRODUCER span; the exporter thread turns each finished span into one scrubbed JSON line.
Figures are microseconds per span on this machine.
"""

from __future__ import annotations

import json
import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from perlinsos_shared.consumer import correlation_attributes
from perlinsos_shared.sampling import make_sampler
from perlinsos_shared.trace_context import span_headers
from perlinsos_shared.trace_export import span_record

DATA = {
    "agency": "DISHUB",
    "request_id": "DISHUB-2026-000001",
    "participant_id": "9f3d518d-3eed-4ec4-934f-dc063ce47401",
    "decision_id": "9f3d518d-3eed-4ec4-934f-dc063ce47402",
    "outcome": "eligible",
    "nik": "2171054507900003",
    "phone_e164": "+6281234567890",
}


def run(quick: bool) -> dict[str, Any]:
    n = 5_000 if quick else 50_000
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=make_sampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")

    started = time.perf_counter()
    for i in range(n):
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.destination.name": "eligibility.decisions.v1",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": "perlinsos-notify",
            "messaging.kafka.destination.partition": i % 6,
            "messaging.kafka.offset": i,
            "messaging.message.id": f"5b1f0c9e-1234-4bcd-9def-{i:012d}",
            "cloudevents.event_type": "perlinsos.eligibility.decided.v1",
        }
        attributes.update(correlation_attributes(DATA))
        span = tracer.start_span(
            "eligibility.decisions.v1 process", kind=SpanKind.CONSUMER, attributes=attributes
        )
        span_headers(span)
        span.end()
    per_span_us = (time.perf_counter() - started) / n * 1e6

    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    started = time.perf_counter()
    size = 0
    for s in spans:
        size += len(json.dumps(span_record(s)))
    export_us = (time.perf_counter() - started) / n * 1e6
    return {
        "spans": n,
        "open_end_with_headers_us_per_span": round(per_span_us, 1),
        "scrubbed_json_export_us_per_span": round(export_us, 1),
        "json_bytes_per_span": size // n,
    }
