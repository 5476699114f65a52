"""The topic-init job against a real broker: every catalogue topic, configured as the code says."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import CATALOGUE
from perlinsos_shared.topics_init import init_topics, topic_specs, wait_for_broker

pytestmark = pytest.mark.flow


async def test_topic_init_creates_and_configures_every_catalogue_topic(settings: Settings) -> None:
    await wait_for_broker(settings, timeout_s=10)
    first = await init_topics(settings)
    specs = topic_specs()
    assert sorted(first.created) == sorted(s.name for s in specs)
    assert first.too_few_partitions == {}

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics([s.name for s in specs])}
        for spec in specs:
            assert len(described[spec.name]["partitions"]) == spec.partitions, spec.name
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
        )
        seen: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.resources:
                _code, _msg, _type, name, entries = resource[:5]
                seen[name] = {e[0]: e[1] for e in entries}
        for spec in specs:
            for key, value in spec.config.items():
                assert seen[spec.name].get(key) == value, (spec.name, key)
    finally:
        await admin.close()

    compacted = [t for t in CATALOGUE if t.compacted]
    assert compacted, "the catalogue has a compacted topic (premium.summaries.v1)"
    for t in compacted:
        assert seen[t.name]["cleanup.policy"] == "compact"
        assert seen[t.dlq]["cleanup.policy"] == "delete"

    again = await init_topics(settings)  # idempotent: nothing new
    assert again.created == []
    assert again.too_few_partitions == {}
