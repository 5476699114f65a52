"""CloudEvents 1.0 on Kafka: what perlinsos writes and what it reads.

perlinsos writes every event in structured JSON mode: the message value is the whole
event, content type `application/cloudevents+json`. It reads both modes of the
CloudEvents Kafka protocol binding: structured, and binary (attributes in `ce_*`
headers, the value is `data` alone, its media type in `content-type`), which the
binding says implementations SHOULD accept. A binary event becomes the same
`RawEnvelope` as its structured twin, so every handler validates and answers both alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field
from uuid_utils import uuid7

from perlinsos_shared.clock import now_local

CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"
BINARY_PREFIX = "ce_"  # the Kafka binding's header prefix for binary-mode attributes
# Longest `id`, `source`, `type` and `subject` accepted: the inbox indexes (source, id), and
# an over-long value could not be stored there (a message the consumer could never
# record would block its partition). Longer ones fail validation and are dead-lettered.
MAX_ATTRIBUTE_LENGTH = 256

DataT = TypeVar("DataT", bound=BaseModel)


def new_id() -> str:
    """A time-ordered (version 7, RFC 9562) UUID as text: every event's id, every decision's,
    every participant's.

    Ids made one after another sort one after another, so each index they key (the inbox,
    the participants and decisions of every service, notify's messages) grows at its right
    edge instead of touching a random page per row: with a table larger than the database's
    buffers that is the difference between a page read per insert and none. The 48-bit
    millisecond prefix says when the id was made, which the rows beside it say already;
    the rest is random, with a counter that keeps ids made within one millisecond in order.
    Ids are keys, not secrets: nothing is authorised by knowing one.
    """
    return str(uuid7())


class CloudEvent(BaseModel, Generic[DataT]):
    """One event on any perlinsos topic. `data` is typed by the event model."""

    model_config = ConfigDict(extra="ignore")

    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    id: str = Field(default_factory=new_id, min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    source: str = Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    type: str = Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    time: datetime = Field(default_factory=now_local)
    subject: str | None = Field(default=None, max_length=MAX_ATTRIBUTE_LENGTH)
    datacontenttype: str = DATA_CONTENT_TYPE
    data: DataT


class RawEnvelope(BaseModel):
    """The envelope with `data` still untyped: the first thing a consumer parses."""

    model_config = ConfigDict(extra="ignore")

    specversion: str = Field(pattern=r"^1\.0$")
    id: str = Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    source: str = Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    type: str = Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    time: datetime | None = None
    subject: str | None = Field(default=None, max_length=MAX_ATTRIBUTE_LENGTH)
    datacontenttype: str | None = None
    data: Any = None


# `CloudEvent[Any]` made once: pydantic finds a parametrised generic in its cache, but the
# look-up costs about a sixth of making the event (every event every service publishes).
_ANY_EVENT = CloudEvent[Any]


def make_event(source: str, data: BaseModel, *, subject: str | None = None) -> CloudEvent[Any]:
    """Wrap an event model in an envelope; the type comes from the model's `event_type`."""
    event_type: str = getattr(data, "event_type")  # noqa: B009 - class attribute on every model
    return _ANY_EVENT(source=source, type=event_type, subject=subject, data=data)


def encode(event: CloudEvent[Any]) -> bytes:
    """Structured mode. An absent optional attribute (`subject`) is left out, as the JSON
    format asks; inside `data` every field is written, a null one as `null`, so a
    required field that may be null (a rejection's unreadable `request_id`) is there."""
    return event.model_dump_json(exclude={"subject"} if event.subject is None else None).encode()


def is_json_media_type(media_type: str | None) -> bool:
    """`application/json`, `text/json` or any `+json` type (parameters ignored)."""
    if not media_type:
        return True  # CloudEvents: no datacontenttype means JSON
    base = media_type.split(";", 1)[0].strip().lower()
    return base in ("application/json", "text/json") or base.endswith("+json")


def _header_text(headers: Iterable[tuple[str, bytes | str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers or ():
        lowered = name.lower()
        if lowered.startswith(BINARY_PREFIX) or lowered == "content-type":
            raw = value.decode() if isinstance(value, bytes | bytearray) else str(value)
            out[lowered] = raw
    return out


def decode_message(
    value: bytes | None, headers: Iterable[tuple[str, bytes | str]] = ()
) -> RawEnvelope:
    """A Kafka message as a CloudEvent, in either mode of the Kafka protocol binding.

    Structured mode is what `content-type: application/cloudevents...` says, and what a
    message without `ce_specversion` is taken to be. Binary mode carries the attributes in
    `ce_*` headers; its `data` must be JSON (perlinsos's events are), anything else is
    refused here with a reason the caller passes on (dead letter, agency reply).
    Raises `ValueError` (pydantic's `ValidationError` is one) when it is neither.
    """
    if value is None:
        raise ValueError("empty message value")
    meta = _header_text(headers)
    content_type = meta.get("content-type", "")
    structured = content_type.lower().startswith("application/cloudevents")
    if structured or "ce_specversion" not in meta:
        return RawEnvelope.model_validate_json(value)
    if not is_json_media_type(content_type):
        raise ValueError(
            f"binary-mode CloudEvent with content-type {content_type[:80]!r}: "
            "perlinsos reads JSON data only (application/json)"
        )
    try:
        data = orjson.loads(value) if value else None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"binary-mode CloudEvent whose data is not JSON: {exc}") from exc
    attributes: dict[str, Any] = {
        name.removeprefix(BINARY_PREFIX): text
        for name, text in meta.items()
        if name.startswith(BINARY_PREFIX)
    }
    attributes["datacontenttype"] = content_type or DATA_CONTENT_TYPE
    attributes["data"] = data
    return RawEnvelope.model_validate(attributes)


def binary_headers(event: CloudEvent[Any]) -> list[tuple[str, bytes]]:
    """The `ce_*` and `content-type` headers of `event` in binary mode (value: `data`).

    perlinsos never writes binary mode itself; agencies and tests may."""
    attributes = event.model_dump(mode="json", exclude={"data", "datacontenttype"})
    out = [
        (BINARY_PREFIX + name, str(value).encode())
        for name, value in attributes.items()
        if value is not None
    ]
    out.append(("content-type", event.datacontenttype.encode()))
    return out


def binary_value(event: CloudEvent[Any]) -> bytes:
    data = event.data
    if isinstance(data, BaseModel):
        return data.model_dump_json().encode()
    return orjson.dumps(data)
