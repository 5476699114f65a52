"""CloudEvents 1.0, structured JSON mode: the message value is the whole event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from perlinsos_shared.clock import now_local

CONTENT_TYPE = "application/cloudevents+json"
# Longest `id`, `source`, `type` and `subject` accepted: the inbox indexes (source, id), and
# an over-long value could not be stored there (a message the consumer could never
# record would block its partition). Longer ones fail validation and are dead-lettered.
MAX_ATTRIBUTE_LENGTH = 256

DataT = TypeVar("DataT", bound=BaseModel)


class CloudEvent(BaseModel, Generic[DataT]):
    """One event on any perlinsos topic. `data` is typed by the event model."""

    model_config = ConfigDict(extra="ignore")

    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    id: str = Field(
        default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=MAX_ATTRIBUTE_LENGTH
    )
    source: str = Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    type: str = Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH)
    time: datetime = Field(default_factory=now_local)
    subject: str | None = Field(default=None, max_length=MAX_ATTRIBUTE_LENGTH)
    datacontenttype: str = "application/json"
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


def make_event(source: str, data: BaseModel, *, subject: str | None = None) -> CloudEvent[Any]:
    """Wrap an event model in an envelope; the type comes from the model's `event_type`."""
    event_type: str = getattr(data, "event_type")  # noqa: B009 - class attribute on every model
    return CloudEvent[Any](source=source, type=event_type, subject=subject, data=data)


def encode(event: CloudEvent[Any]) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()
