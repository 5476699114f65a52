"""Create and configure every topic of the catalogue, for deployments.

`python -m perlinsos_shared.topics_init` is the topic-init job of `docker-compose.yml`:
it waits for the broker, creates every catalogue topic and its `.dlq` twin with the
code's own `ensure_topics`, then applies each topic's `cleanup.policy` and
`retention.ms` from the catalogue (also to topics that already existed, so a changed
retention reaches the broker). A topic with fewer partitions than the catalogue asks
for is reported, not grown: adding partitions moves keys to other partitions and would
break the order per participant while old messages are still being consumed.

`python -m perlinsos_shared.topics_init --strimzi` prints the same topics as Strimzi
`KafkaTopic` resources; `deploy/k8s/base/kafka-topics.yaml` is that output and a test
fails when it no longer matches the catalogue.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IncompatibleBrokerVersion, KafkaConnectionError, KafkaError

from perlinsos_shared.kafka import _admin_security, bootstrap, ensure_topics, security
from perlinsos_shared.logs import setup_logging
from perlinsos_shared.settings import Settings, get_settings
from perlinsos_shared.topics import CATALOGUE, Topic

log = logging.getLogger("perlinsos.topics_init")

DAY_MS = 86_400_000
DLQ_PARTITIONS = 1  # as `ensure_topics` creates them: dead letters are few, order is moot
STRIMZI_CLUSTER = "perlinsos"


@dataclass(frozen=True)
class TopicSpec:
    """One Kafka topic as the broker should have it."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def retention_ms(days: int) -> int:
    """Kafka's `retention.ms` for a retention in days; negative means keep forever."""
    return -1 if days < 0 else days * DAY_MS


def topic_config(topic: Topic) -> dict[str, str]:
    return {
        "cleanup.policy": "compact" if topic.compacted else "delete",
        "retention.ms": str(retention_ms(topic.retention_days)),
    }


def dlq_config(topic: Topic) -> dict[str, str]:
    """Dead letters are evidence: never compacted, kept as long as the topic's messages."""
    return {"cleanup.policy": "delete", "retention.ms": str(retention_ms(topic.retention_days))}


def topic_specs(catalogue: Iterable[Topic] = CATALOGUE) -> list[TopicSpec]:
    """Every catalogue topic and its dead-letter twin, in catalogue order."""
    specs: list[TopicSpec] = []
    for t in catalogue:
        specs.append(TopicSpec(t.name, t.partitions, topic_config(t)))
        specs.append(TopicSpec(t.dlq, DLQ_PARTITIONS, dlq_config(t)))
    return specs


def strimzi_topics(
    specs: Sequence[TopicSpec], cluster: str = STRIMZI_CLUSTER, replicas: int = 1
) -> list[dict[str, Any]]:
    """Strimzi `KafkaTopic` resources (kafka.strimzi.io/v1beta2) for the given topics."""
    return [
        {
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaTopic",
            "metadata": {
                "name": spec.name,
                "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "perlinsos"},
            },
            "spec": {
                "topicName": spec.name,
                "partitions": spec.partitions,
                "replicas": replicas,
                "config": dict(spec.config),
            },
        }
        for spec in specs
    ]


@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)  # with their configuration
    configured: list[str] = field(default_factory=list)  # existed; configuration applied
    too_few_partitions: dict[str, tuple[int, int]] = field(default_factory=dict)


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap(settings)}
    if security(settings) is not None:
        kwargs.update(_admin_security(settings))
    return AIOKafkaAdminClient(**kwargs)


async def wait_for_broker(settings: Settings, timeout_s: float) -> None:
    """Return once the broker answers a metadata request; raise after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = _admin(settings)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"broker did not answer within {timeout_s:.0f} s") from exc
            log.info("waiting for the broker", extra={"error": type(exc).__name__})
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


async def init_topics(settings: Settings, specs: Sequence[TopicSpec] | None = None) -> InitReport:
    """Create missing topics, apply every topic's configuration, report short partitions."""
    specs = list(specs) if specs is not None else topic_specs()
    configs = {s.name: s.config for s in specs}
    report = InitReport(created=await ensure_topics(settings, topic_configs=configs))
    admin = _admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([s.name for s in specs])
        partitions = {d["topic"]: len(d.get("partitions") or []) for d in described}
        for spec in specs:
            have = partitions.get(spec.name, 0)
            if have < spec.partitions:
                report.too_few_partitions[spec.name] = (have, spec.partitions)
        # Topics created now already carry their configuration; those that existed get
        # it applied, so a retention changed in the catalogue reaches the broker.
        for spec in specs:
            if spec.name in report.created:
                continue
            resource = ConfigResource(ConfigResourceType.TOPIC, spec.name, dict(spec.config))
            try:
                await admin.alter_configs([resource])
            except IncompatibleBrokerVersion:
                # The embedded broker (Tansu) has no AlterConfigs; it keeps what a topic
                # was created with.
                log.warning("broker cannot alter topic configs; left as created")
                break
            report.configured.append(spec.name)
    finally:
        await admin.close()
    return report


def _print_strimzi(cluster: str, replicas: int) -> None:
    import yaml  # a development tool; the runtime image does not need PyYAML

    docs = strimzi_topics(topic_specs(), cluster=cluster, replicas=replicas)
    sys.stdout.write(
        "# Generated from perlinsos_shared.topics.CATALOGUE by\n"
        "#   uv run --frozen python -m perlinsos_shared.topics_init --strimzi\n"
        "# Do not edit: tests/test_deploy.py fails when this differs from the catalogue.\n"
    )
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perlinsos_shared.topics_init",
        description="Create every catalogue topic with its partitions, retention and compaction.",
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for the broker (default 60)"
    )
    parser.add_argument(
        "--strimzi", action="store_true", help="print Strimzi KafkaTopic resources and exit"
    )
    parser.add_argument("--cluster", default=STRIMZI_CLUSTER, help="Strimzi cluster label")
    parser.add_argument("--replicas", type=int, default=1, help="replicas in KafkaTopic specs")
    args = parser.parse_args(argv)
    if args.strimzi:
        _print_strimzi(args.cluster, args.replicas)
        return 0

    setup_logging("topics-init")
    settings = get_settings()

    async def run() -> InitReport:
        await wait_for_broker(settings, args.wait)
        return await init_topics(settings)

    report = asyncio.run(run())
    for name, (have, want) in report.too_few_partitions.items():
        log.warning(
            "topic has fewer partitions than the catalogue; not grown automatically",
            extra={"topic": name, "partitions": have, "catalogue_partitions": want},
        )
    log.info(
        "topics ready",
        extra={"created": report.created, "configured": len(report.configured)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
