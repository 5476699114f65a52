"""Premium's Kafka handlers: thin. Decode, call the pure rules, write in the batch's transaction.

- decisions -> covers (covers.py) -> wanted months vs. billed (reconcile.py) -> ledger rows,
  adjustments, running totals; summaries are published by the coalescing publisher.
- participants -> who a participant is (NIK, name) for the finance export.
- payments -> what finance paid BPJS; the line's latest provisional month is republished
  with its new arrears.
"""

from __future__ import annotations

import logging

import asyncpg

from perlinsos_premium import metrics
from perlinsos_premium.covers import Covers, Decision, apply_decision, billed_months
from perlinsos_premium.ledger import (
    CLOSE_LOCK,
    apply_changes,
    closed_months,
    load_billed,
    load_covers,
    load_rates,
    save_covers,
    upsert_people,
)
from perlinsos_premium.reconcile import Changes, plan
from perlinsos_premium.summaries import mark_line_changed
from perlinsos_shared.clock import today_local
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.events import EligibilityDecided, ParticipantEnrolled, PaymentRecorded
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.sql import insert_rows
from perlinsos_shared.trace_context import coalesced_span_headers

log = logging.getLogger("perlinsos.premium")


async def handle_decisions(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", CLOSE_LOCK)
    decisions = [EligibilityDecided.model_validate(m.envelope.data) for m in messages]
    ids = sorted({d.participant_id for d in decisions})
    before = await load_covers(conn, ids)
    after: dict[str, Covers] = dict(before)
    for d in decisions:
        pid = d.participant_id
        after[pid] = apply_decision(
            after.get(pid, ()),
            Decision(
                d.outcome,
                d.funding_line.value if d.funding_line else None,
                d.cover_start,
                d.cover_end,
            ),
        )
    changed = sorted(pid for pid in ids if after.get(pid, ()) != before.get(pid, ()))
    if not changed:
        return
    through = today_local()
    rates = await load_rates(conn)
    closed = await closed_months(conn)
    ledger, adjusted = await load_billed(conn, changed)
    changes = Changes()
    for pid in changed:
        changes.extend(
            plan(
                pid,
                billed_months(after[pid], through),
                ledger.get(pid, {}),
                adjusted.get(pid, {}),
                closed,
                rates,
            )
        )
    await save_covers(conn, {pid: after[pid] for pid in changed})
    # a summary stands for the whole batch: its own trace, linking every decision's span
    summary_context = coalesced_span_headers(
        "premium.summaries coalesce",
        (m.span.get_span_context() for m in messages if m.span is not None),
    )
    await apply_changes(conn, changes, summary_context)
    if changes.adjust:
        metrics.adjustments_booked.add(len(changes.adjust))
        log.info("closed months corrected by adjustments", extra={"count": len(changes.adjust)})


async def handle_participants(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    """Keep NIK and name per participant; exits come through eligibility decisions."""
    people = []
    for m in messages:
        if m.type != ParticipantEnrolled.event_type:
            continue
        p = ParticipantEnrolled.model_validate(m.envelope.data)
        people.append((p.participant_id, p.nik, p.full_name))
    await upsert_people(conn, people)


PAYMENT_COLUMNS = (
    ("funding_line", "text"),
    ("reference", "text"),
    ("period", "text"),
    ("amount_idr", "bigint"),
    ("paid_on", "date"),
    ("recorded_by", "text"),
    ("event_id", "text"),
)


async def handle_payments(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    payments = [(m.id, PaymentRecorded.model_validate(m.envelope.data)) for m in messages]
    if not payments:
        return
    inserted = await insert_rows(
        conn,
        "payments",
        PAYMENT_COLUMNS,
        [
            (p.funding_line.value, p.reference, p.period, p.amount_idr, p.paid_on,
             p.recorded_by, event_id)
            for event_id, p in payments
        ],
        then="ON CONFLICT DO NOTHING RETURNING funding_line",
    )  # fmt: skip
    if len(inserted) < len(payments):
        log.info(
            "payment references already recorded were ignored",
            extra={"count": len(payments) - len(inserted)},
        )
    await mark_line_changed(conn, sorted({r["funding_line"] for r in inserted}))
