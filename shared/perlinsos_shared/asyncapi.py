"""The AsyncAPI 3.1 document of every topic, generated from the catalogue and event models.

`python -m perlinsos_shared.asyncapi > docs/asyncapi.json` (or `make asyncapi`).

- One channel per topic and per `.dlq` twin, with its Kafka binding (partitions,
  cleanup policy, retention).
- One message per CloudEvents `type`: the structured-mode envelope (specversion and id
  required) with `type` pinned and `data` the event model's JSON Schema; content type
  `application/cloudevents+json`; the Kafka headers perlinsos writes or reads
  (`content-type`, `traceparent`, `tracestate`, `in-reply-to`); the Kafka key.
  Intake also lists the binary-mode form an agency may send (attributes in `ce_*`
  headers, the value is `data` alone).
- Dead letters: the original value byte for byte, with the original headers and the
  `x-dlq-*` ones.
- Operations: for each party (the four services, and the agencies, finance and
  operators outside), a `send` for every topic it publishes and a `receive` for every
  topic it consumes, from the catalogue's producer and consumers, which
  `tests/test_asyncapi.py` checks against the services' code.

The document is built here rather than by FastStream's generator: FastStream describes
its own subscribers (one per topic, `application/json`, a `correlation_id` header, keys
with `:`), which is not the wire perlinsos speaks.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from perlinsos_shared.envelope import BINARY_PREFIX, CONTENT_TYPE, DATA_CONTENT_TYPE
from perlinsos_shared.events import Contract, PremiumSummary, PremiumSummaryWithArrears
from perlinsos_shared.topics import CATALOGUE, Topic
from perlinsos_shared.topics_init import topic_specs

VERSION = "1.0.0"
KAFKA_BINDING = "0.5.0"
SCHEMAS = "#/components/schemas/"

# Premium publishes the finance contract with extra, optional arrears fields.
PUBLISHED_AS: dict[type[Contract], type[BaseModel]] = {PremiumSummary: PremiumSummaryWithArrears}

# Parties outside the four services, as the catalogue names them, and their ids here.
EXTERNAL = {"upstream agencies": "agencies", "finance": "finance", "operators": "operators"}
SERVICES = ("registry", "eligibility", "premium", "notify")

TRACEPARENT = {
    "type": "string",
    "description": "W3C Trace Context: the span that sent this message.",
    "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
}
TRACESTATE = {"type": "string", "description": "W3C Trace Context vendor state."}


def _party(name: str) -> str:
    return EXTERNAL.get(name, name)


def _data_model(model: type[Contract]) -> type[BaseModel]:
    return PUBLISHED_AS.get(model, model)


def _message_key(event_type: str) -> str:
    return event_type  # e.g. perlinsos.enrolment.submitted.v1: letters, digits, . and -


def _envelope(model: type[Contract], data_ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "CloudEvents 1.0, structured JSON mode: the message value is the event.",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {
                "type": "string",
                "minLength": 1,
                "description": "Unique per event; consumers deduplicate on (source, id).",
            },
            "source": {
                "type": "string",
                "minLength": 1,
                "description": "Who produced it: agency/<CODE> or perlinsos/<service>.",
            },
            "type": {"type": "string", "const": model.event_type},
            "time": {
                "type": "string",
                "format": "date-time",
                "description": "When it happened, with an offset (+07:00 from perlinsos).",
            },
            "subject": {"type": "string", "description": "What it is about, when told."},
            "datacontenttype": {"type": "string", "const": DATA_CONTENT_TYPE},
            "data": {"$ref": data_ref},
        },
    }


def _headers(topic: Topic, *, in_reply_to: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "content-type": {
            "type": "string",
            "const": CONTENT_TYPE,
            "description": "Structured mode; written by perlinsos on every event.",
        },
        "traceparent": TRACEPARENT,
        "tracestate": TRACESTATE,
    }
    if in_reply_to:
        properties["in-reply-to"] = {
            "type": "string",
            "description": "The CloudEvents id of the registry.intake.v1 message this answers "
            "(written by registry, so an agency can match a reply whose request id was "
            "unreadable).",
        }
    return {
        "type": "object",
        "description": f"Kafka record headers of {topic.name}.",
        "properties": properties,
    }


def _key(topic: Topic) -> dict[str, Any]:
    return {
        "type": "string",
        "description": f"Kafka message key: {topic.key}.",
    }


def _message(topic: Topic, model: type[Contract]) -> dict[str, Any]:
    data = _data_model(model)
    return {
        "name": model.event_type,
        "title": model.event_type,
        "summary": (model.__doc__ or model.__name__).strip().splitlines()[0],
        "contentType": CONTENT_TYPE,
        "headers": _headers(topic, in_reply_to=topic.producer == "registry"),
        "payload": _envelope(model, SCHEMAS + data.__name__),
        "bindings": {"kafka": {"key": _key(topic), "bindingVersion": KAFKA_BINDING}},
    }


def _binary_message(topic: Topic, model: type[Contract]) -> dict[str, Any]:
    data = _data_model(model)
    attribute = {"type": "string", "minLength": 1}
    return {
        "name": model.event_type + ".binary",
        "title": model.event_type + " (binary mode)",
        "summary": "The same event in binary mode: CloudEvents attributes in ce_* headers, "
        "the value is data alone (JSON). Accepted on intake; perlinsos never writes it.",
        "contentType": DATA_CONTENT_TYPE,
        "headers": {
            "type": "object",
            "required": [f"{BINARY_PREFIX}{a}" for a in ("specversion", "id", "source", "type")],
            "properties": {
                f"{BINARY_PREFIX}specversion": {"type": "string", "const": "1.0"},
                f"{BINARY_PREFIX}id": attribute,
                f"{BINARY_PREFIX}source": attribute,
                f"{BINARY_PREFIX}type": {"type": "string", "const": model.event_type},
                f"{BINARY_PREFIX}time": {"type": "string", "format": "date-time"},
                f"{BINARY_PREFIX}subject": {"type": "string"},
                "content-type": {
                    "type": "string",
                    "description": "The media type of data: application/json (or any "
                    "+json type); anything else is refused with SCHEMA_INVALID.",
                },
                "traceparent": TRACEPARENT,
                "tracestate": TRACESTATE,
            },
        },
        "payload": {"$ref": SCHEMAS + data.__name__},
        "bindings": {"kafka": {"key": _key(topic), "bindingVersion": KAFKA_BINDING}},
    }


def _dead_letter(topic: Topic) -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "name": "dead-letter",
        "title": f"Dead letter of {topic.name}",
        "summary": "The original message value byte for byte (often not JSON: that may be "
        "the error), with its original headers and key; why it failed is in x-dlq-* headers.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "required": [
                "x-dlq-error",
                "x-dlq-original-topic",
                "x-dlq-original-partition",
                "x-dlq-original-offset",
                "x-dlq-failed-at",
            ],
            "properties": {
                "x-dlq-error": {**text, "description": "Why (at most 2000 characters)."},
                "x-dlq-original-topic": {**text, "const": topic.name},
                "x-dlq-original-partition": {**text, "pattern": "^[0-9]+$"},
                "x-dlq-original-offset": {**text, "pattern": "^[0-9]+$"},
                "x-dlq-failed-at": {**text, "description": "Unix time in seconds."},
                "traceparent": TRACEPARENT,
                "tracestate": TRACESTATE,
            },
            "additionalProperties": {
                **text,
                "description": "The original message's headers, copied.",
            },
        },
        "payload": {
            "type": "string",
            "format": "binary",
            "description": "The original message value, unchanged.",
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original message's key."},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _channel_binding(topic: Topic, *, dlq: bool) -> dict[str, Any]:
    spec = next(s for s in topic_specs() if s.name == (topic.dlq if dlq else topic.name))
    return {
        "kafka": {
            "topic": spec.name,
            "partitions": spec.partitions,
            "topicConfiguration": {
                "cleanup.policy": [spec.config["cleanup.policy"]],
                "retention.ms": int(spec.config["retention.ms"]),
            },
            "bindingVersion": KAFKA_BINDING,
        }
    }


def parties(topic: Topic) -> tuple[str, list[str]]:
    """(who sends, who receives) a topic, as party ids."""
    return _party(topic.producer), [_party(c) for c in topic.consumers]


def dead_letter_parties(topic: Topic) -> tuple[list[str], list[str]]:
    """Every service consuming a topic dead-letters it; operators read dead letters."""
    senders = [c for c in topic.consumers if c in SERVICES]
    return senders, ["operators"]


def _operation(
    party: str, action: str, channel: str, messages: list[str], topic: Topic
) -> dict[str, Any]:
    verb = "publishes to" if action == "send" else "consumes"
    op: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": f"{party} {verb} {channel}",
        "summary": f"{party} {verb} {channel}.",
        "tags": [{"name": party}],
        "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
    }
    if action == "receive" and party in SERVICES:
        op["bindings"] = {
            "kafka": {
                "groupId": {"type": "string", "enum": [f"perlinsos-{party}"]},
                "bindingVersion": KAFKA_BINDING,
            }
        }
    return op


def document() -> dict[str, Any]:
    models = sorted({_data_model(m) for t in CATALOGUE for m in t.events}, key=lambda m: m.__name__)
    _, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template=SCHEMAS + "{model}"
    )
    schemas: dict[str, Any] = dict(sorted(defs.get("$defs", {}).items()))
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    for topic in CATALOGUE:
        names = []
        for model in topic.events:
            key = _message_key(model.event_type)
            messages[key] = _message(topic, model)
            names.append(key)
            if topic.producer == "upstream agencies":
                messages[key + ".binary"] = _binary_message(topic, model)
                names.append(key + ".binary")
        channels[topic.name] = {
            "address": topic.name,
            "title": topic.name,
            "description": (
                f"{topic.description} Key: {topic.key}. Producer: {topic.producer}. "
                f"Consumers: {', '.join(topic.consumers)}."
                + (" Compacted: the latest revision per key wins." if topic.compacted else "")
            ),
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": _channel_binding(topic, dlq=False),
        }
        dlq_message = f"{topic.name}.dead-letter"
        messages[dlq_message] = _dead_letter(topic)
        channels[topic.dlq] = {
            "address": topic.dlq,
            "title": topic.dlq,
            "description": f"Dead letters of {topic.name}: what could not be decoded or "
            "applied after bounded retries, with the error in headers.",
            "messages": {"dead-letter": {"$ref": f"#/components/messages/{dlq_message}"}},
            "bindings": _channel_binding(topic, dlq=True),
        }

        sender, receivers = parties(topic)
        operations[f"{sender}.send.{topic.name}"] = _operation(
            sender, "send", topic.name, names, topic
        )
        for receiver in receivers:
            operations[f"{receiver}.receive.{topic.name}"] = _operation(
                receiver, "receive", topic.name, names, topic
            )
        dlq_senders, dlq_receivers = dead_letter_parties(topic)
        for party in dlq_senders:
            operations[f"{party}.send.{topic.dlq}"] = _operation(
                party, "send", topic.dlq, ["dead-letter"], topic
            )
        for party in dlq_receivers:
            operations[f"{party}.receive.{topic.dlq}"] = _operation(
                party, "receive", topic.dlq, ["dead-letter"], topic
            )

    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "perlinsos topics",
            "version": VERSION,
            "description": (
                "Batam's social-protection programme: every topic, key and event type. Every "
                "message perlinsos writes is a CloudEvents 1.0 event in structured JSON mode "
                "(content type application/cloudevents+json); intake also accepts binary "
                "mode. W3C traceparent and tracestate travel in Kafka headers. Money is "
                "integer rupiah; periods are YYYY-MM in Asia/Jakarta. Operations are tagged "
                "with the party that sends or receives: the four services, and the agencies, "
                "finance and operators outside them."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "The Kafka cluster (KAFKA_BOOTSTRAP_SERVERS).",
            }
        },
        "channels": channels,
        "operations": dict(sorted(operations.items())),
        "components": {"messages": dict(sorted(messages.items())), "schemas": schemas},
    }


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
