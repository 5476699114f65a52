"""Registry's Kafka handler: decode, plan (`intake.py`), write the plan, emit.

The consumer hands a whole batch in one transaction. The handler validates the batch
(pure), loads what the plan needs (the batch's NIKs under `FOR UPDATE`, which of its
(agency, request_id) pairs are already recorded), plans (pure), and writes the plan with
a fixed handful of set-based statements whatever the batch's size. If another instance
recorded one of the plan's new NIKs or pairs between load and write, the write is undone
(a savepoint) and the batch is loaded and planned again.

Every event registry emits for an intake message carries the Kafka header
`in-reply-to` with that message's CloudEvents id, so an agency (or a test) can match
replies even when its request id was unreadable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.intake import (
    DeadLetter,
    Emit,
    IntakeMessage,
    IntakePlan,
    Reply,
    plan_intake,
    read_intake,
    wanted,
)
from perlinsos_registry.origin import Origin
from perlinsos_registry.reasons import reason
from perlinsos_registry.store import IntakeStore, PgIntakeStore
from perlinsos_registry.validation import agency_of_source, identity
from perlinsos_shared import envelope
from perlinsos_shared.clock import now_local
from perlinsos_shared.consumer import Handler, Incoming, Record, dead_letter, record_headers
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import IntakeRejected, Reason
from perlinsos_shared.masking import mask_nik
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import (
    INTAKE,
    INTAKE_REJECTED,
    PARTICIPANTS,
    agency_replies_topic,
    rejection_key,
)

SOURCE = "perlinsos/registry"
IN_REPLY_TO = "in-reply-to"
PLAN_ATTEMPTS = 5  # loads and plans of one batch while other instances race it


class IntakeRaced(RuntimeError):
    """Other writers kept taking this batch's new NIKs or pairs first."""


def _reply_headers(m: Incoming | None) -> dict[str, str]:
    if m is None:
        return {}
    return {**m.trace_headers, IN_REPLY_TO: m.id}


def reject(
    outbox: Outbox,
    m: Incoming | None,
    agency: str,
    request_id: str | None,
    nik: str | None,
    reasons: list[Reason],
    policy: AgencyPolicy | None = None,
) -> None:
    """A `perlinsos.intake.rejected.v1` reply to the agency (NIK masked): on the shared
    replies topic and, for an agency of the `policy`, on its own one
    (`registry.intake-rejected.<AGENCY>.v2`, which only that agency may read)."""
    event = make_event(
        SOURCE,
        IntakeRejected(
            agency=agency,
            request_id=request_id,
            nik_masked=mask_nik(nik) if nik else None,
            reasons=reasons,
        ),
    )
    key, headers = rejection_key(agency, request_id), _reply_headers(m)
    outbox.add(INTAKE_REJECTED.name, key, event, headers)
    if policy is not None and policy.is_known(agency):
        outbox.add(agency_replies_topic(agency), key, event, headers)


def emit(
    plan: IntakePlan,
    messages: Sequence[Incoming],
    outbox: Outbox,
    policy: AgencyPolicy | None = None,
) -> None:
    """The plan's answers, in arrival order, into the outbox."""
    for out in plan.outputs:
        m = messages[out.at]
        if isinstance(out, Reply):
            reject(outbox, m, out.agency, out.request_id, out.nik, out.reasons, policy)
        elif isinstance(out, DeadLetter):
            dead_letter(outbox, INTAKE, m.record, out.error)
        elif isinstance(out, Emit):
            pid = out.event.participant_id
            event = make_event(SOURCE, out.event, subject=pid)
            outbox.add(PARTICIPANTS.name, pid, event, _reply_headers(m))


async def apply_intake(
    store: IntakeStore,
    messages: Sequence[Incoming],
    outbox: Outbox,
    policy: AgencyPolicy,
    *,
    now: datetime | None = None,
    new_id: Callable[[], str] = envelope.new_id,
    origin: Origin | None = None,
) -> IntakePlan:
    """Validate, load, plan, write, emit: one batch, in the caller's transaction. With an
    `origin` (always, in the service), a message its agency did not sign is refused."""
    verified = [True] * len(messages) if origin is None else await origin.verified_all(messages)
    plain = [
        IntakeMessage(m.id, m.type, m.envelope.source, m.envelope.data, origin_verified=ok)
        for m, ok in zip(messages, verified, strict=True)
    ]
    reads = read_intake(plain, policy)
    pairs, niks = wanted(reads)
    ids = [m.id for m in plain]
    at = now or now_local()
    for _ in range(PLAN_ATTEMPTS):
        known = await store.load(pairs, niks)
        plan = plan_intake(reads, known, policy, now=at, event_ids=ids, new_id=new_id)
        if await store.write(plan):
            emit(plan, messages, outbox, policy)
            return plan
    raise IntakeRaced(f"state changed under the batch {PLAN_ATTEMPTS} times")


def make_handler(policy: AgencyPolicy, origin: Origin) -> Handler:
    """The handler of `registry.intake.v1` under this agency policy and these agency keys."""

    async def handle_intake(
        conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
    ) -> None:
        await apply_intake(PgIntakeStore(conn), messages, outbox, policy, origin=origin)

    return handle_intake


def on_undecodable(record: Record, error: str, outbox: Outbox) -> None:
    """Not JSON or not an envelope: the consumer dead-letters it; answer the agency too
    when one can be identified (headers, or whatever JSON fragments can be read)."""
    agency, request_id = _identify_raw(record)
    if agency is None:
        return
    reasons = [
        reason("SCHEMA_INVALID", None, f"pesan bukan CloudEvent JSON yang sah ({error[:160]})")
    ]
    event = make_event(
        SOURCE,
        IntakeRejected(agency=agency, request_id=request_id, nik_masked=None, reasons=reasons),
    )
    headers = record_headers(record)
    reply_headers = {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}
    outbox.add(INTAKE_REJECTED.name, rejection_key(agency, request_id), event, reply_headers)


def _identify_raw(record: Record) -> tuple[str | None, str | None]:
    headers = record_headers(record)
    agency = headers.get("agency") or agency_of_source(headers.get("ce_source"))
    request_id = headers.get("request_id")
    if agency is None and record.value:
        try:
            doc = json.loads(record.value)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            data_agency, data_request_id, _ = identity(doc.get("data"))
            source = doc.get("source")
            agency = data_agency or agency_of_source(source if isinstance(source, str) else None)
            request_id = request_id or data_request_id
    if agency is not None and (len(agency) > 64 or not agency.isprintable()):
        return None, None
    return agency, request_id
