"""Metrics through OpenTelemetry, scraped by Prometheus from each service's `/metrics`.

`setup_metrics` installs the service's MeterProvider once: a Prometheus reader whose
text the health server serves on `PERLINSOS_METRICS_PORT`, and, when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OTLP exporter too. Services create their own
domain instruments with `get_meter(__name__)` at import time (the global proxy binds them
to the provider once it is set). Labels never carry personal data: topic, partition,
outcome, funding line, period, provider, status; never a NIK, name, phone or person id.

The platform instruments (`PlatformMetrics`) cover what every service shares: messages
consumed and produced per topic, batch durations, duplicates, dead letters, consumer lag
per partition, outbox backlog and age, outbox rows the broker refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import (
    CollectorRegistry,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from perlinsos_shared.settings import Settings

# Seconds, from a 1 ms batch to a 10 s month close.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def get_meter(name: str) -> Meter:
    """The meter for a module's instruments (no-op until `setup_metrics` has run)."""
    return otel_metrics.get_meter(name)


@dataclass
class MetricsEndpoint:
    """What the health server's `/metrics` renders: the Prometheus text of one registry."""

    registry: CollectorRegistry

    def render(self) -> bytes:
        return generate_latest(self.registry)


def setup_metrics(service: str, settings: Settings) -> tuple[MeterProvider, MetricsEndpoint]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    registry = CollectorRegistry(auto_describe=True)
    process_collector.ProcessCollector(registry=registry)  # resident memory, CPU, fds
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    readers: list[MetricReader] = [
        PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    ]
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    provider = MeterProvider(
        metric_readers=readers,
        resource=Resource.create(
            {"service.name": f"perlinsos-{service}", "service.namespace": "perlinsos"}
        ),
        views=[
            View(
                instrument_name="*duration*",
                aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
            )
        ],
    )
    otel_metrics.set_meter_provider(provider)
    return provider, MetricsEndpoint(registry)


@dataclass
class PlatformMetrics:
    """The instruments of the shared plumbing (consumer, outbox relay) of one service."""

    meter: Meter = field(default_factory=lambda: get_meter("perlinsos.platform"))
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    outbox_backlog: int = 0
    outbox_oldest_age_s: float = 0.0

    def __post_init__(self) -> None:
        m = self.meter
        self.consumed = m.create_counter(
            "perlinsos.messages.consumed", unit="{message}", description="Records consumed"
        )
        self.applied = m.create_counter(
            "perlinsos.messages.applied", unit="{message}", description="Events applied"
        )
        self.duplicates = m.create_counter(
            "perlinsos.messages.duplicates",
            unit="{message}",
            description="Redelivered events dropped by the inbox",
        )
        self.dead_letters = m.create_counter(
            "perlinsos.dead_letters",
            unit="{message}",
            description="Messages sent to the topic's .dlq twin",
        )
        self.produced = m.create_counter(
            "perlinsos.messages.produced",
            unit="{message}",
            description="Outbox rows published, per topic",
        )
        self.outbox_refused = m.create_counter(
            "perlinsos.outbox.refused",
            unit="{row}",
            description="Outbox rows the broker refused for themselves (marked, skipped)",
        )
        self.batch_duration = m.create_histogram(
            "perlinsos.consumer.batch.duration",
            unit="s",
            description="One consumed batch: decode, transaction, handler, outbox",
        )
        self.relay_duration = m.create_histogram(
            "perlinsos.outbox.relay.duration",
            unit="s",
            description="One outbox relay round: read, publish, mark published",
        )
        m.create_observable_gauge(
            "perlinsos.consumer.lag",
            callbacks=[self._observe_lag],
            unit="{message}",
            description="Records behind the partition's high watermark",
        )
        m.create_observable_gauge(
            "perlinsos.outbox.backlog",
            callbacks=[self._observe_backlog],
            unit="{row}",
            description="Outbox rows not yet published",
        )
        m.create_observable_gauge(
            "perlinsos.outbox.oldest.age",
            callbacks=[self._observe_age],
            unit="s",
            description="Age of the oldest unpublished outbox row",
        )

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(lag, {"topic": topic, "partition": partition})
            for (topic, partition), lag in sorted(self.lag.items())
        ]

    def _observe_backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.outbox_backlog)]

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.outbox_oldest_age_s)]


_platform: PlatformMetrics | None = None


def platform() -> PlatformMetrics:
    """The process's platform instruments (created on first use)."""
    global _platform
    if _platform is None:
        _platform = PlatformMetrics()
    return _platform
