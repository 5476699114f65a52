"""Notify: decisions in, one pending SMS each; a sender loop hands them to the provider."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from perlinsos_notify.providers import Accepted, Outgoing, SmsProvider
from perlinsos_notify.render import render
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import EligibilityDecided, SmsDelivery
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DELIVERIES

log = logging.getLogger("perlinsos.notify")
SOURCE = "perlinsos/notify"


def make_handler(settings: Settings, wake: asyncio.Event) -> Any:
    async def handle_decisions(
        conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
    ) -> None:
        rows = []
        for m in messages:
            d = EligibilityDecided.model_validate(m.envelope.data)
            sms = render(d, settings.sms_sender_id, settings.sms_help_line)
            rows.append(
                (
                    f"sms-{d.decision_id}",
                    d.participant_id,
                    d.decision_id,
                    sms.template,
                    d.phone_e164,
                    sms.text,
                    m.trace_headers.get("traceparent"),
                )
            )
        await conn.executemany(
            "INSERT INTO messages (message_id, participant_id, decision_id, template, phone_e164,"
            " body, traceparent) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING",
            rows,
        )
        wake.set()

    return handle_decisions


class Sender:
    """Hands pending messages to the provider in batches and records the outcome."""

    def __init__(
        self,
        pool_getter: Any,
        provider: SmsProvider,
        wake: asyncio.Event,
        after_commit: Any,
        batch_size: int = 500,
    ) -> None:
        self._pool_getter = pool_getter
        self._provider = provider
        self._wake = wake
        self._after_commit = after_commit
        self._batch_size = batch_size
        self.accepted = 0

    async def run(self) -> None:
        while True:
            sent = await self.send_once()
            if sent == 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=0.5)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def send_once(self) -> int:
        pool: asyncpg.Pool = self._pool_getter()
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT message_id, participant_id, decision_id, template, phone_e164, body,"
                " attempts FROM messages WHERE status = 'pending' ORDER BY created_at"
                " LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            results = await self._provider.send_many(
                [Outgoing(r["message_id"], r["phone_e164"], r["body"]) for r in rows]
            )
            outbox = Outbox()
            updates: list[tuple[str, str, str | None, int | None, str | None]] = []
            for r, res in zip(rows, results, strict=True):
                if isinstance(res, Accepted):
                    updates.append(
                        (r["message_id"], "accepted", res.provider_message_id, res.segments, None)
                    )
                    delivery = SmsDelivery(
                        participant_id=r["participant_id"],
                        decision_id=r["decision_id"],
                        template=r["template"],
                        status="accepted",
                        provider=self._provider.name,
                        provider_message_id=res.provider_message_id,
                        segments=res.segments,
                        attempts=r["attempts"] + 1,
                    )
                    outbox.add(
                        DELIVERIES.name,
                        r["participant_id"],
                        make_event(SOURCE, delivery, subject=r["participant_id"]),
                    )
                else:
                    updates.append((r["message_id"], "pending", None, None, repr(res)[:500]))
            await conn.executemany(
                "UPDATE messages SET status = $2, provider_message_id = $3, segments = $4,"
                " last_error = $5, attempts = attempts + 1, provider = $6, updated_at = now()"
                " WHERE message_id = $1",
                [(*u, self._provider.name) for u in updates],
            )
            await outbox.flush(conn)
        self.accepted += sum(1 for u in updates if u[1] == "accepted")
        self._after_commit()
        return len(rows)
