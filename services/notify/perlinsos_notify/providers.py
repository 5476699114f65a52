"""SMS providers behind one small interface, chosen by settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from perlinsos_shared.clock import now_local
from perlinsos_shared.settings import Settings


@dataclass(frozen=True)
class Outgoing:
    message_id: str  # ours: stable per participant and decision
    to: str  # E.164
    text: str


@dataclass(frozen=True)
class Accepted:
    provider_message_id: str
    status: str
    segments: int


class SmsProvider(Protocol):
    name: str

    async def send_many(self, messages: list[Outgoing]) -> list[Accepted | Exception]: ...

    async def close(self) -> None: ...


class FileProvider:
    """The embedded default: one JSON line per message handed over."""

    name = "file"

    def __init__(self, path: Path, sender_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sender_id = sender_id

    async def send_many(self, messages: list[Outgoing]) -> list[Accepted | Exception]:
        at = now_local().isoformat()
        with self.path.open("a", encoding="utf-8") as f:
            for m in messages:
                f.write(
                    json.dumps(
                        {
                            "id": m.message_id,
                            "from": self.sender_id,
                            "to": m.to,
                            "body": m.text,
                            "at": at,
                        }
                    )
                    + "\n"
                )
        return [Accepted(f"file-{m.message_id}", "accepted", 1) for m in messages]

    async def close(self) -> None:
        return None


def make_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "file":
        return FileProvider(settings.sms_file, settings.sms_sender_id)
    raise NotImplementedError(f"SMS provider {settings.sms_provider!r} is not available yet")
