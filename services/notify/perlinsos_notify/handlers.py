"""Notify's Kafka handler: a decision becomes one message row, keyed by its decision id.

A redelivered decision changes nothing (the unique key); a number that cannot get an SMS
is settled at once as `undeliverable`; the sender loop (sender.py) is woken for the rest
once the batch has committed (app.py), so that its claim sees the new rows.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from perlinsos_notify.delivery import UNDELIVERABLE_TEXT, undeliverable_reason
from perlinsos_notify.outcomes import emit_delivery, outcomes_counter
from perlinsos_notify.render import render
from perlinsos_notify.store import insert_messages
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.events import EligibilityDecided
from perlinsos_shared.masking import mask_nik, pseudonym
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.settings import Settings


def message_id_for(decision_id: str) -> str:
    return f"sms-{decision_id}"


def make_handler(settings: Settings) -> Any:
    async def handle_decisions(
        conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
    ) -> None:
        rows: list[tuple[str | None, ...]] = []
        for m in messages:
            d = EligibilityDecided.model_validate(m.envelope.data)
            sms = render(d, settings.sms_brand, settings.sms_help_line)
            if sms is None:  # the template data sends nothing for this decision
                continue
            code = undeliverable_reason(d.phone_e164)
            rows.append(
                (
                    message_id_for(d.decision_id),
                    d.participant_id,
                    d.decision_id,
                    sms.template,
                    d.phone_e164,
                    sms.text,
                    m.trace_headers.get("traceparent"),
                    "undeliverable" if code else "pending",
                    code,
                    pseudonym(d.nik) if d.nik else None,
                    mask_nik(d.nik) if d.nik else None,
                )
            )
        inserted = await insert_messages(conn, rows)
        undeliverable = [r for r in inserted if r["status"] == "undeliverable"]
        for r in undeliverable:
            emit_delivery(
                outbox,
                r,
                status="undeliverable",
                provider=settings.sms_provider,
                attempts=0,
                error=UNDELIVERABLE_TEXT.get(r["error_code"], r["error_code"]),
            )
        if undeliverable:
            outcomes_counter.add(len(undeliverable), {"status": "undeliverable"})

    return handle_decisions
