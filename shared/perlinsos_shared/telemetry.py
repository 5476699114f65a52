"""OpenTelemetry set-up shared by every service: `setup_tracing`, `instrument_clients`.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans go there by OTLP; otherwise (embedded
default) they go to `<state dir>/traces/<service>.jsonl` for `perlinsos trace`.

One submission is one trace: the agency's producer span is the parent of registry's
consumer span, whose context the outbox stores beside each row it causes; the relay
publishes under that context, so FastStream's producer span is a child of it and the
next service's consumer span a child of that producer span. An event that coalesces many
messages (premium's summaries) starts its own trace and *links* the messages it covers.

Personal data never leaves a process in a span: every exporter set up here scrubs
NIK-shaped and phone-shaped digit runs from span names, attributes, events and status
text (a second line of defence; the code puts only pseudonyms and masked values in spans).

The parts live beside it:

- `perlinsos_shared.scrubbing`: `scrub` and `scrub_attributes` (personal data masked);
- `perlinsos_shared.trace_export`: the trace store's exporter and the scrubbing wrapper;
- `perlinsos_shared.sampling`: `make_sampler` (parent-based, orphan database spans dropped);
- `perlinsos_shared.trace_context`: W3C trace-context helpers (headers in, spans out);
- `perlinsos_shared.lean_spans`: `ServiceTracerProvider` and `ConsumerSpans` (short path).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from perlinsos_shared.lean_spans import ServiceTracerProvider
from perlinsos_shared.settings import Settings
from perlinsos_shared.trace_export import JsonlSpanExporter, ScrubbingSpanExporter


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
