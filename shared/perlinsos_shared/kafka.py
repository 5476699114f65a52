"""Broker construction from settings (plain, SASL or TLS) and topic creation."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import CATALOGUE


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context()
    if settings.kafka_ssl_cafile:
        ctx.load_verify_locations(cafile=str(settings.kafka_ssl_cafile))
    return ctx


def security(settings: Settings) -> BaseSecurity | None:
    ctx = _ssl_context(settings)
    use_ssl = ctx is not None
    if settings.kafka_security_protocol.startswith("SASL"):
        user = settings.kafka_sasl_username or ""
        password = settings.kafka_sasl_password or ""
        if settings.kafka_sasl_mechanism == "SCRAM-SHA-256":
            return SASLScram256(user, password, ssl_context=ctx, use_ssl=use_ssl)
        if settings.kafka_sasl_mechanism == "SCRAM-SHA-512":
            return SASLScram512(user, password, ssl_context=ctx, use_ssl=use_ssl)
        return SASLPlaintext(user, password, ssl_context=ctx, use_ssl=use_ssl)
    if ctx is not None:
        return BaseSecurity(ssl_context=ctx, use_ssl=True)
    return None


def bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise RuntimeError(
            "KAFKA_BOOTSTRAP_SERVERS is not set: start the stack with `perlinsos up` "
            "or point it at a broker"
        )
    return settings.kafka_bootstrap_servers


def make_broker(settings: Settings, client_id: str, **kwargs: Any) -> KafkaBroker:
    # acks=all; the idempotent producer unless turned off (the embedded broker lacks it)
    return KafkaBroker(
        bootstrap(settings),
        client_id=client_id,
        security=security(settings),
        acks="all",
        enable_idempotence=settings.kafka_idempotent,
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        **kwargs,
    )


async def ensure_topics(
    settings: Settings,
    topic_configs: Mapping[str, Mapping[str, str]] | None = None,
    *,
    partitions: int | None = None,
) -> list[str]:
    """Create every catalogue topic and its `.dlq` twin; return those created now.

    `topic_configs` (topic name to Kafka topic configs) replaces the default
    configuration of the topics it names (deployments pass retention and compaction).
    `partitions`, when given, is every catalogue topic's partition count instead of the
    catalogue's own (the embedded single-node broker: `perlinsos_devruntime.stack`).
    """
    configs = topic_configs or {}
    sec = security(settings)
    admin_kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap(settings)}
    if sec is not None:
        admin_kwargs.update(_admin_security(settings))
    admin = AIOKafkaAdminClient(**admin_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for t in CATALOGUE:
            config = {"cleanup.policy": "compact"} if t.compacted else {}
            config = dict(configs.get(t.name, config))
            if t.name not in existing:
                wanted.append(NewTopic(t.name, partitions or t.partitions, 1, topic_configs=config))
            if t.dlq not in existing:
                wanted.append(NewTopic(t.dlq, 1, 1, topic_configs=dict(configs.get(t.dlq, {}))))
        for nt in wanted:  # one at a time: some brokers reject a batch with any conflict
            try:
                await admin.create_topics([nt])
            except TopicAlreadyExistsError:
                pass
        return [nt.name for nt in wanted]
    finally:
        await admin.close()


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """The outbox relay's producer: aiokafka directly, batching, acks from every replica.

    The idempotent producer (`PERLINSOS_KAFKA_IDEMPOTENT`, on by default) keeps a retried
    request from writing a record twice or out of order; the embedded broker does not
    implement it, so `perlinsos up` turns it off there. Order per key holds either way
    because one relay per service sends in outbox order (the consumers' inbox drops the
    duplicates a retry without it may cause).
    """
    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap(settings), "client_id": client_id}
    if security(settings) is not None:
        kwargs.update(_admin_security(settings))
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=settings.kafka_idempotent,
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        **kwargs,
    )


def _admin_security(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    ctx = _ssl_context(settings)
    if ctx is not None:
        out["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL"):
        out["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        out["sasl_plain_username"] = settings.kafka_sasl_username
        out["sasl_plain_password"] = settings.kafka_sasl_password
    return out
