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
from perlinsos_notify.store import MESSAGE_COLUMNS, insert_messages
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
        cols: dict[str, list[Any]] = {k: [] for k in MESSAGE_COLUMNS}
        for m in messages:
            d = EligibilityDecided.model_validate(m.envelope.data)
            sms = render(d, settings.sms_brand, settings.sms_help_line)
            if sms is None:  # the template data sends nothing for this decision
                continue
            code = undeliverable_reason(d.phone_e164)
            cols["message_id"].append(message_id_for(d.decision_id))
            cols["participant_id"].append(d.participant_id)
            cols["decision_id"].append(d.decision_id)
            cols["template"].append(sms.template)
            cols["phone"].append(d.phone_e164)
            cols["body"].append(sms.text)
            cols["traceparent"].append(m.trace_headers.get("traceparent"))
            cols["status"].append("undeliverable" if code else "pending")
            cols["code"].append(code)
            cols["nik_hash"].append(pseudonym(d.nik) if d.nik else None)
            cols["nik_masked"].append(mask_nik(d.nik) if d.nik else None)
        inserted = await insert_messages(conn, cols)
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
