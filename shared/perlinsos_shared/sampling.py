"""The services' trace sampler: parent-based, orphan database spans dropped.

`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` choose how many new traces are kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes


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
