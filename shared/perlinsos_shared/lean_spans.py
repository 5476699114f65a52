"""Spans on a short path: the span the SDK's tracer makes, built from plain values.

A service's `ServiceTracerProvider` (set up by `perlinsos_shared.telemetry.setup_tracing`)
and `ConsumerSpans` make them; the comment below says why and what differs.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
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
from opentelemetry.sdk.trace.sampling import Decision
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

from perlinsos_shared.sampling import make_sampler
from perlinsos_shared.trace_context import MAX_LINKS, context_from_headers, parent_from_headers

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
