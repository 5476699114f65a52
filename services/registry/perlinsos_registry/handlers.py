"""Registry's Kafka handler: decode, validate, store one participant per NIK, emit.

The consumer hands a whole batch in one transaction. Consecutive messages of one type
are applied together with set-based statements, so a run of enrolments costs a fixed
handful of round trips whatever its size:

1. validate every message (pure, `validation.py`);
2. claim every (agency, request_id) in `submissions` with its outcome
   (`INSERT ... ON CONFLICT DO NOTHING RETURNING`): a pair already seen is a
   resubmission, which gets the stored outcome and emits nothing new;
3. insert the accepted participants (`ON CONFLICT (nik) DO NOTHING`); a NIK that lost
   becomes `DUPLICATE_NIK`, naming the agency that enrolled it first;
4. audit rows and outbox events for what changed.

Every event registry emits for an intake message carries the Kafka header
`in-reply-to` with that message's CloudEvents id, so an agency (or a test) can match
replies even when its request id was unreadable.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.origin import Origin
from perlinsos_registry.reasons import reason
from perlinsos_registry.validation import (
    ParticipantState,
    agency_of_source,
    check_enrolment,
    check_exit,
    decide_exit,
    duplicate_nik,
    identity,
    unknown_event_type,
)
from perlinsos_shared.clock import BATAM_TZ, now_local
from perlinsos_shared.consumer import Incoming, Record, dead_letter, record_headers
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import (
    EnrolmentSubmitted,
    ExitReported,
    IntakeRejected,
    Occupation,
    ParticipantEnrolled,
    ParticipantExited,
    Reason,
)
from perlinsos_shared.masking import mask_nik
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, PARTICIPANTS, agency_replies_topic

SOURCE = "perlinsos/registry"
IN_REPLY_TO = "in-reply-to"
POLICY = AgencyPolicy.load()
ORIGIN = Origin.load()


def _json(value: object) -> str:
    """JSON text for a jsonb parameter (orjson: several times faster than json)."""
    return orjson.dumps(value).decode()


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
) -> None:
    """A `perlinsos.intake.rejected.v1` reply to the agency (NIK masked)."""
    event = make_event(
        SOURCE,
        IntakeRejected(
            agency=agency,
            request_id=request_id,
            nik_masked=mask_nik(nik) if nik else None,
            reasons=reasons,
        ),
    )
    _reply(outbox, agency, f"{agency}:{request_id}", event, _reply_headers(m))


def _reply(outbox: Outbox, agency: str, key: str, event: Any, headers: dict[str, str]) -> None:
    """A reply on the shared replies topic and, for a registered agency, on its own one
    (`registry.intake-rejected.<AGENCY>.v2`, which only that agency may read)."""
    outbox.add(INTAKE_REJECTED.name, key, event, headers)
    if POLICY.is_known(agency):
        outbox.add(agency_replies_topic(agency), key, event, headers)


def _reply_to(m: Incoming) -> tuple[str | None, str | None, str | None]:
    """Who to answer: the agency from `data`, else from `source`; request id; NIK."""
    agency, request_id, nik = identity(m.envelope.data)
    return agency or agency_of_source(m.envelope.source), request_id, nik


def _unanswerable(outbox: Outbox, m: Incoming, why: str) -> None:
    """A message no agency can be told about goes to the dead-letter topic."""
    dead_letter(outbox, INTAKE, m.record, why)


@dataclass
class _Claims:
    """Rows for `submissions`, claimed together; returns the pairs seen for the first time."""

    rows: list[tuple[str, str, str, str, str, str | None, str, str | None]] = field(
        default_factory=list
    )

    def add(
        self,
        m: Incoming,
        agency: str,
        request_id: str,
        kind: str,
        reasons: list[Reason],
        participant_id: str | None,
        nik: str | None,
    ) -> None:
        outcome = "rejected" if reasons else "accepted"
        payload = _json([r.model_dump() for r in reasons])
        self.rows.append((agency, request_id, kind, outcome, payload, participant_id, m.id, nik))

    async def claim(self, conn: asyncpg.Connection) -> set[tuple[str, str]]:
        if not self.rows:
            return set()
        cols = list(zip(*self.rows, strict=True))
        claimed = await conn.fetch(
            "INSERT INTO submissions (agency, request_id, kind, outcome, reasons, participant_id,"
            " event_id, nik) "
            "SELECT a, r, k, o, x::jsonb, p, e, n FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS t(a, r, k, o, x, p, e, n)"
            " ON CONFLICT DO NOTHING RETURNING agency, request_id",
            *[list(c) for c in cols],
        )
        return {(r["agency"], r["request_id"]) for r in claimed}


async def _write_audit(
    conn: asyncpg.Connection, rows: list[tuple[str, str, str, str, Any]]
) -> None:
    if not rows:
        return
    pid, agency, request_id, action, changes = (list(c) for c in zip(*rows, strict=True))
    await conn.execute(
        "INSERT INTO audit_log (participant_id, agency, request_id, action, changes) "
        "SELECT p, a, r, x, c::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
        " $5::text[]) AS t(p, a, r, x, c)",
        pid,
        agency,
        request_id,
        action,
        [_json(c) for c in changes],
    )


# --- enrolments -------------------------------------------------------------------------


@dataclass
class _Candidate:
    m: Incoming
    sub: EnrolmentSubmitted
    phone: str
    participant_id: str


async def handle_enrolments(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    claims = _Claims()
    replies: list[tuple[Incoming, str, str, str | None, list[Reason]]] = []
    candidates: dict[tuple[str, str], _Candidate] = {}
    seen: set[tuple[str, str]] = set()  # the same request twice in one batch: first counts
    for m in messages:
        checked = check_enrolment(m.envelope.data, m.envelope.source, POLICY)
        agency, request_id, nik = _reply_to(m)
        if checked.accepted:
            assert checked.submission is not None and checked.phone_e164 is not None
            sub = checked.submission
            pair = (sub.agency, sub.request_id)
            if pair in seen:
                continue
            seen.add(pair)
            pid = str(uuid.uuid4())
            candidates[pair] = _Candidate(m, sub, checked.phone_e164, pid)
            claims.add(m, sub.agency, sub.request_id, "enrolment", [], pid, sub.nik)
        elif agency is None:
            _unanswerable(outbox, m, "SCHEMA_INVALID: no agency in data or source")
        elif request_id is None:
            reject(outbox, m, agency, None, nik, checked.reasons)  # answerable, not storable
        elif (agency, request_id) not in seen:
            seen.add((agency, request_id))
            claims.add(m, agency, request_id, "enrolment", checked.reasons, None, nik)
            replies.append((m, agency, request_id, nik, checked.reasons))

    claimed = await claims.claim(conn)
    for m, agency, request_id, nik, reasons in replies:
        if (agency, request_id) in claimed:
            reject(outbox, m, agency, request_id, nik, reasons)
    fresh = [c for pair, c in candidates.items() if pair in claimed]
    if not fresh:
        return

    enrolled_at = now_local()
    inserted = await conn.fetch(
        "INSERT INTO participants (participant_id, nik, full_name, birth_date, sex, phone_e164,"
        " address, occupation, evidence, existing_bpjs_tk, agency, request_id, enrolled_at) "
        "SELECT p, n, f, b, s, ph, ad::jsonb, o, ev::jsonb, x, a, r, $13 FROM unnest($1::text[],"
        " $2::text[], $3::text[], $4::date[], $5::text[], $6::text[], $7::text[], $8::text[],"
        " $9::text[], $10::bool[], $11::text[], $12::text[])"
        " AS t(p, n, f, b, s, ph, ad, o, ev, x, a, r) "
        "ON CONFLICT (nik) DO NOTHING RETURNING participant_id",
        [c.participant_id for c in fresh],
        [c.sub.nik for c in fresh],
        [c.sub.full_name.strip() for c in fresh],
        [c.sub.birth_date for c in fresh],
        [c.sub.sex for c in fresh],
        [c.phone for c in fresh],
        [c.sub.address.model_dump_json() for c in fresh],
        [c.sub.occupation.value for c in fresh],
        [c.sub.evidence.model_dump_json(exclude_none=True) for c in fresh],
        [c.sub.existing_bpjs_tk for c in fresh],
        [c.sub.agency for c in fresh],
        [c.sub.request_id for c in fresh],
        enrolled_at,
    )
    inserted_ids = {r["participant_id"] for r in inserted}
    losers = [c for c in fresh if c.participant_id not in inserted_ids]
    if losers:
        await _refuse_duplicates(conn, outbox, losers)

    audit: list[tuple[str, str, str, str, Any]] = []
    for c in fresh:
        if c.participant_id not in inserted_ids:
            continue
        sub = c.sub
        event = make_event(
            SOURCE,
            ParticipantEnrolled(
                participant_id=c.participant_id,
                nik=sub.nik,
                full_name=sub.full_name.strip(),
                birth_date=sub.birth_date,
                sex=sub.sex,
                phone_e164=c.phone,
                address=sub.address,
                occupation=sub.occupation,
                existing_bpjs_tk=sub.existing_bpjs_tk,
                agency=sub.agency,
                request_id=sub.request_id,
                enrolled_at=enrolled_at,
            ),
            subject=c.participant_id,
        )
        outbox.add(PARTICIPANTS.name, c.participant_id, event, _reply_headers(c.m))
        audit.append(
            (c.participant_id, sub.agency, sub.request_id, "enrolled", _enrolment_changes(c))
        )
    await _write_audit(conn, audit)


def _enrolment_changes(c: _Candidate) -> dict[str, Any]:
    sub = c.sub
    new = {
        "nik": sub.nik,
        "full_name": sub.full_name.strip(),
        "birth_date": sub.birth_date.isoformat(),
        "sex": sub.sex,
        "phone_e164": c.phone,
        "address": sub.address.model_dump(exclude_none=True),
        "occupation": sub.occupation.value,
        "evidence": sub.evidence.model_dump(exclude_none=True),
        "existing_bpjs_tk": sub.existing_bpjs_tk,
    }
    return {k: {"old": None, "new": v} for k, v in new.items()}


async def _refuse_duplicates(
    conn: asyncpg.Connection, outbox: Outbox, losers: list[_Candidate]
) -> None:
    """NIKs already participants (or enrolled earlier in this batch): DUPLICATE_NIK."""
    rows = await conn.fetch(
        "SELECT nik, agency FROM participants WHERE nik = ANY($1::text[])",
        list({c.sub.nik for c in losers}),
    )
    first = {r["nik"]: r["agency"] for r in rows}
    reasons = {c.participant_id: [duplicate_nik(first.get(c.sub.nik, "?"))] for c in losers}
    await conn.execute(
        "UPDATE submissions s SET outcome = 'rejected', participant_id = NULL, reasons = t.x::jsonb"
        " FROM unnest($1::text[], $2::text[], $3::text[]) AS t(a, r, x)"
        " WHERE s.agency = t.a AND s.request_id = t.r",
        [c.sub.agency for c in losers],
        [c.sub.request_id for c in losers],
        [_json([r.model_dump() for r in reasons[c.participant_id]]) for c in losers],
    )
    for c in losers:
        reject(outbox, c.m, c.sub.agency, c.sub.request_id, c.sub.nik, reasons[c.participant_id])


# --- exits ------------------------------------------------------------------------------


async def handle_exits(conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox) -> None:
    parsed: list[tuple[Incoming, ExitReported]] = []
    claims = _Claims()
    replies: list[tuple[Incoming, str, str, str | None, list[Reason]]] = []
    seen: set[tuple[str, str]] = set()  # the same request twice in one batch: first counts
    for m in messages:
        checked = check_exit(m.envelope.data, m.envelope.source, POLICY)
        agency, request_id, nik = _reply_to(m)
        if checked.exit is not None:
            pair = (checked.exit.agency, checked.exit.request_id)
            if pair not in seen:
                seen.add(pair)
                parsed.append((m, checked.exit))
        elif agency is None:
            _unanswerable(outbox, m, "SCHEMA_INVALID: no agency in data or source")
        elif request_id is None:
            reject(outbox, m, agency, None, nik, checked.reasons)
        elif (agency, request_id) not in seen:
            seen.add((agency, request_id))
            claims.add(m, agency, request_id, "exit", checked.reasons, None, nik)
            replies.append((m, agency, request_id, nik, checked.reasons))

    state: dict[str, ParticipantState] = {}
    if parsed:
        rows = await conn.fetch(
            "SELECT participant_id, nik, occupation, enrolled_at, exited_on FROM participants"
            " WHERE nik = ANY($1::text[]) FOR UPDATE",
            list({ex.nik for _, ex in parsed}),
        )
        state = {
            r["nik"]: ParticipantState(
                participant_id=r["participant_id"],
                occupation=Occupation(r["occupation"]),
                enrolled_on=_batam_date(r["enrolled_at"]),
                exited_on=r["exited_on"],
            )
            for r in rows
        }

    # Decide in arrival order against the state as it evolves within the batch; only the
    # pairs claimed for the first time are applied (a resubmission changes nothing).
    decisions: list[tuple[Incoming, ExitReported, list[Reason], ParticipantState | None]] = []
    for m, ex in parsed:
        participant = state.get(ex.nik)
        reasons = decide_exit(ex, participant, POLICY)
        pid = participant.participant_id if participant else None
        claims.add(m, ex.agency, ex.request_id, "exit", reasons, None if reasons else pid, ex.nik)
        decisions.append((m, ex, reasons, participant))
        if not reasons and participant is not None:
            state[ex.nik] = ParticipantState(
                participant.participant_id,
                participant.occupation,
                participant.enrolled_on,
                ex.effective_date,
            )
    claimed = await claims.claim(conn)
    for m, agency, request_id, nik, reasons in replies:
        if (agency, request_id) in claimed:
            reject(outbox, m, agency, request_id, nik, reasons)

    applied: list[tuple[Incoming, ExitReported, str]] = []
    for m, ex, reasons, participant in decisions:
        if (ex.agency, ex.request_id) not in claimed:
            continue
        if reasons or participant is None:
            reject(outbox, m, ex.agency, ex.request_id, ex.nik, reasons)
        else:
            applied.append((m, ex, participant.participant_id))
    if not applied:
        return
    await conn.execute(
        "UPDATE participants p SET exited_on = t.d, exit_reason = t.r"
        " FROM unnest($1::text[], $2::date[], $3::text[]) AS t(pid, d, r)"
        " WHERE p.participant_id = t.pid",
        [pid for _, _, pid in applied],
        [ex.effective_date for _, ex, _ in applied],
        [ex.reason.value for _, ex, _ in applied],
    )
    audit: list[tuple[str, str, str, str, Any]] = []
    for m, ex, pid in applied:
        event = make_event(
            SOURCE,
            ParticipantExited(
                participant_id=pid,
                agency=ex.agency,
                request_id=ex.request_id,
                reason=ex.reason,
                effective_date=ex.effective_date,
            ),
            subject=pid,
        )
        outbox.add(PARTICIPANTS.name, pid, event, _reply_headers(m))
        changes = {
            "exited_on": {"old": None, "new": ex.effective_date.isoformat()},
            "exit_reason": {"old": None, "new": ex.reason.value},
        }
        audit.append((pid, ex.agency, ex.request_id, "exited", changes))
    await _write_audit(conn, audit)


def _batam_date(at: datetime | date) -> date:
    if isinstance(at, datetime):
        return at.astimezone(BATAM_TZ).date()
    return at


# --- the batch --------------------------------------------------------------------------


def _proven(messages: list[Incoming], outbox: Outbox) -> list[Incoming]:
    """The messages their agency signed; the rest are refused (`origin.py`), unclaimed."""
    proven = []
    for m in messages:
        agency, request_id, nik = _reply_to(m)
        refusal = ORIGIN.check(m, agency)
        if refusal is None:
            proven.append(m)
        elif agency is None or not POLICY.is_known(agency):
            _unanswerable(outbox, m, f"SOURCE_UNVERIFIED: {refusal.message[:200]}")
        else:
            reject(outbox, m, agency, request_id, nik, [refusal])
    return proven


async def handle_intake(conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox) -> None:
    """Apply a batch in arrival order, consecutive messages of one type together."""
    messages = _proven(messages, outbox)
    for event_type, group in itertools.groupby(messages, key=lambda m: m.type):
        run = list(group)
        if event_type == EnrolmentSubmitted.event_type:
            await handle_enrolments(conn, run, outbox)
        elif event_type == ExitReported.event_type:
            await handle_exits(conn, run, outbox)
        else:
            for m in run:
                agency, request_id, nik = _reply_to(m)
                if agency is None:
                    _unanswerable(outbox, m, f"UNKNOWN_EVENT_TYPE: {event_type[:100]}")
                else:
                    reject(
                        outbox,
                        m,
                        agency,
                        request_id,
                        nik,
                        [unknown_event_type(event_type)],
                    )


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
    _reply(outbox, agency, f"{agency}:{request_id}", event, reply_headers)


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
