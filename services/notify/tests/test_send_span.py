"""The `sms send` span: a CLIENT span under the message's stored trace context, current
while the provider is called (so that the provider's own spans are its children), with
its provider, template, attempt and result; made on the short path (`ConsumerSpans`)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from perlinsos_notify import sender as sender_module
from perlinsos_notify.delivery import Accepted, RetryPolicy, SendResult
from perlinsos_notify.providers import Outgoing
from perlinsos_notify.sender import Sender
from perlinsos_notify.store import Claimed
from perlinsos_shared.lean_spans import ConsumerSpans, ServiceTracerProvider

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Provider:
    name = "fake"

    def __init__(self, tracer: trace.Tracer, fail: bool = False) -> None:
        self._tracer = tracer
        self._fail = fail

    async def send(self, message: Outgoing) -> SendResult:
        with self._tracer.start_as_current_span("POST", kind=SpanKind.CLIENT):
            if self._fail:
                raise ConnectionResetError("peer went away")
            return Accepted("SM1", "queued", 1)


def _claimed(traceparent: str | None) -> Claimed:
    return Claimed(
        "sms-1", "p-1", "d-1", "eligible", "+6281234567890", "Halo", 1, uuid.uuid4(),
        traceparent, None, 0.0,
    )  # fmt: skip


def _run(traceparent: str | None, fail: bool = False) -> tuple[InMemorySpanExporter, list]:
    exporter = InMemorySpanExporter()
    provider = ServiceTracerProvider(Resource.create({"service.name": "perlinsos-notify"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mp = pytest.MonkeyPatch()
    mp.setattr(sender_module, "send_spans", ConsumerSpans("perlinsos.notify", provider))
    handed: list = []
    try:
        sender = Sender(
            lambda: None,  # type: ignore[arg-type, return-value]
            _Provider(provider.get_tracer("client"), fail),
            asyncio.Event(),
            lambda: None,
            policy=RetryPolicy(1.0, 10.0, 60.0),
        )
        asyncio.run(sender._send(_claimed(traceparent), handed))
    except ConnectionResetError:
        pass
    finally:
        mp.undo()
    return exporter, handed


def test_send_span_continues_the_stored_trace_and_parents_the_provider_call() -> None:
    exporter, handed = _run(PARENT)
    post, send = exporter.get_finished_spans()
    assert (send.name, send.kind) == ("sms send", SpanKind.CLIENT)
    assert send.context.trace_id == int(PARENT.split("-")[1], 16)
    assert send.parent is not None and send.parent.span_id == int(PARENT.split("-")[2], 16)
    assert post.parent is not None and post.parent.span_id == send.context.span_id
    assert dict(send.attributes or {}) == {
        "perlinsos.sms.provider": "fake",
        "perlinsos.sms.template": "eligible",
        "perlinsos.sms.attempt": 1,
        "perlinsos.sms.result": "Accepted",
    }
    assert send.instrumentation_scope is not None
    assert send.instrumentation_scope.name == "perlinsos.notify"
    assert len(handed) == 1
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left current


def test_send_span_without_a_stored_context_starts_a_trace() -> None:
    exporter, _ = _run(None)
    post, send = exporter.get_finished_spans()
    assert send.parent is None and post.parent is not None
    assert post.context.trace_id == send.context.trace_id


def test_send_span_records_a_provider_error() -> None:
    exporter, _ = _run(PARENT, fail=True)
    _, send = exporter.get_finished_spans()
    assert send.status.status_code is StatusCode.ERROR
    assert [e.name for e in send.events] == ["exception"]
