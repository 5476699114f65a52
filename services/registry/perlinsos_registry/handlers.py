"""Registry's Kafka handler: decode, validate, store one participant per NIK, emit.

A batch is applied in one transaction (the consumer wraps it); consecutive messages of
one kind are handled together so a batch costs a few statements, not one per message.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import asyncpg
from pydantic import ValidationError

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.reasons import reason
from perlinsos_registry.validation import check_submission
from perlinsos_shared.clock import now_local
from perlinsos_shared.consumer import Incoming, Record, dead_letter, record_headers
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import (
    EnrolmentSubmitted,
    ExitReported,
    IntakeRejected,
    ParticipantEnrolled,
    ParticipantExited,
    Reason,
)
from perlinsos_shared.masking import mask_nik
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import INTAKE, INTAKE_REJECTED, PARTICIPANTS

SOURCE = "perlinsos/registry"
POLICY = AgencyPolicy.load()


def _reject(
    outbox: Outbox,
    msg: Incoming | None,
    agency: str | None,
    request_id: str | None,
    nik: str | None,
    reasons: list[Reason],
) -> None:
    event = make_event(
        SOURCE,
        IntakeRejected(
            agency=agency,
            request_id=request_id,
            nik_masked=mask_nik(nik) if isinstance(nik, str) else None,
            reasons=reasons,
        ),
    )
    outbox.add(
        INTAKE_REJECTED.name,
        f"{agency}:{request_id}",
        event,
        msg.trace_headers if msg else None,
    )


def _schema_reasons(exc: ValidationError) -> list[Reason]:
    out = []
    for err in exc.errors()[:20]:
        field = ".".join(str(p) for p in err["loc"]) or None
        out.append(reason("SCHEMA_INVALID", field, err["msg"]))
    return out


def _identity(data: Any) -> tuple[str | None, str | None, str | None]:
    if not isinstance(data, dict):
        return None, None, None
    a, r, n = data.get("agency"), data.get("request_id"), data.get("nik")
    return (
        a if isinstance(a, str) and a else None,
        r if isinstance(r, str) and r else None,
        n if isinstance(n, str) else None,
    )


async def _record_submissions(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO submissions (agency, request_id, kind, outcome, reasons, participant_id, "
        "event_id) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        rows,
    )


async def _already_seen(
    conn: asyncpg.Connection, pairs: list[tuple[str, str]]
) -> set[tuple[str, str]]:
    if not pairs:
        return set()
    rows = await conn.fetch(
        "SELECT s.agency, s.request_id FROM submissions s "
        "JOIN unnest($1::text[], $2::text[]) AS p(agency, request_id) "
        "USING (agency, request_id)",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return {(r["agency"], r["request_id"]) for r in rows}


async def handle_enrolments(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    parsed: list[tuple[Incoming, EnrolmentSubmitted]] = []
    for m in messages:
        agency, request_id, nik = _identity(m.envelope.data)
        try:
            sub = EnrolmentSubmitted.model_validate(m.envelope.data)
        except ValidationError as exc:
            if agency and request_id:
                _reject(outbox, m, agency, request_id, nik, _schema_reasons(exc))
                await _record_submissions(
                    conn, [(agency, request_id, "enrolment", "rejected", [], None, m.id)]
                )
            else:
                dead_letter(
                    outbox,
                    INTAKE,
                    m.record,
                    f"SCHEMA_INVALID: {exc.error_count()} errors, no agency",
                )
            continue
        parsed.append((m, sub))

    seen = await _already_seen(conn, [(s.agency, s.request_id) for _, s in parsed])
    fresh: list[tuple[Incoming, EnrolmentSubmitted, str]] = []
    submission_rows: list[tuple[Any, ...]] = []
    for m, sub in parsed:
        pair = (sub.agency, sub.request_id)
        if pair in seen:
            continue  # same (agency, request_id): same outcome, nothing new emitted
        seen.add(pair)
        checked = check_submission(sub, m.envelope.source, POLICY)
        if checked.reasons:
            _reject(outbox, m, sub.agency, sub.request_id, sub.nik, checked.reasons)
            submission_rows.append(
                (
                    sub.agency,
                    sub.request_id,
                    "enrolment",
                    "rejected",
                    [r.model_dump() for r in checked.reasons],
                    None,
                    m.id,
                )
            )
            continue
        assert checked.phone_e164 is not None
        fresh.append((m, sub, checked.phone_e164))

    enrolled_at = now_local()
    ids = [str(uuid.uuid4()) for _ in fresh]
    inserted = await conn.fetch(
        "INSERT INTO participants (participant_id, nik, full_name, birth_date, sex, phone_e164,"
        " address, occupation, evidence, existing_bpjs_tk, agency, request_id, enrolled_at) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[],"
        " $6::text[], $7::jsonb[], $8::text[], $9::jsonb[], $10::bool[], $11::text[],"
        " $12::text[], $13::timestamptz[]) "
        "ON CONFLICT (nik) DO NOTHING RETURNING participant_id",
        ids,
        [s.nik for _, s, _ in fresh],
        [s.full_name for _, s, _ in fresh],
        [s.birth_date for _, s, _ in fresh],
        [s.sex for _, s, _ in fresh],
        [p for _, _, p in fresh],
        [s.address.model_dump() for _, s, _ in fresh],
        [s.occupation.value for _, s, _ in fresh],
        [s.evidence.model_dump(exclude_none=True) for _, s, _ in fresh],
        [s.existing_bpjs_tk for _, s, _ in fresh],
        [s.agency for _, s, _ in fresh],
        [s.request_id for _, s, _ in fresh],
        [enrolled_at] * len(fresh),
    )
    inserted_ids = {r["participant_id"] for r in inserted}
    duplicates = [
        s.nik for pid, (_, s, _) in zip(ids, fresh, strict=True) if pid not in inserted_ids
    ]
    first_agency: dict[str, str] = {}
    if duplicates:
        rows = await conn.fetch(
            "SELECT nik, agency FROM participants WHERE nik = ANY($1::text[])", duplicates
        )
        first_agency = {r["nik"]: r["agency"] for r in rows}

    audit: list[tuple[Any, ...]] = []
    for pid, (m, sub, phone) in zip(ids, fresh, strict=True):
        if pid not in inserted_ids:
            reasons = [
                reason(
                    "DUPLICATE_NIK",
                    "nik",
                    f"didaftarkan pertama oleh {first_agency.get(sub.nik, '?')}",
                )
            ]
            _reject(outbox, m, sub.agency, sub.request_id, sub.nik, reasons)
            submission_rows.append(
                (
                    sub.agency,
                    sub.request_id,
                    "enrolment",
                    "rejected",
                    [r.model_dump() for r in reasons],
                    None,
                    m.id,
                )
            )
            continue
        event = make_event(
            SOURCE,
            ParticipantEnrolled(
                participant_id=pid,
                nik=sub.nik,
                full_name=sub.full_name,
                birth_date=sub.birth_date,
                sex=sub.sex,
                phone_e164=phone,
                address=sub.address,
                occupation=sub.occupation,
                existing_bpjs_tk=sub.existing_bpjs_tk,
                agency=sub.agency,
                request_id=sub.request_id,
                enrolled_at=enrolled_at,
            ),
            subject=pid,
        )
        outbox.add(PARTICIPANTS.name, pid, event, m.trace_headers)
        submission_rows.append((sub.agency, sub.request_id, "enrolment", "accepted", [], pid, m.id))
        audit.append(
            (pid, sub.agency, sub.request_id, "enrolled", {"occupation": sub.occupation.value})
        )
    await _record_submissions(conn, submission_rows)
    if audit:
        await conn.executemany(
            "INSERT INTO audit_log (participant_id, agency, request_id, action, changes) "
            "VALUES ($1, $2, $3, $4, $5)",
            audit,
        )


async def handle_exits(conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox) -> None:
    for m in messages:
        agency, request_id, nik = _identity(m.envelope.data)
        try:
            ex = ExitReported.model_validate(m.envelope.data)
        except ValidationError as exc:
            if agency and request_id:
                _reject(outbox, m, agency, request_id, nik, _schema_reasons(exc))
            continue
        if await _already_seen(conn, [(ex.agency, ex.request_id)]):
            continue
        row = await conn.fetchrow(
            "SELECT participant_id, enrolled_at, exited_on FROM participants WHERE nik = $1 "
            "FOR UPDATE",
            ex.nik,
        )
        reasons: list[Reason] = []
        if row is None:
            reasons.append(reason("UNKNOWN_NIK", "nik"))
        elif row["exited_on"] is not None:
            reasons.append(reason("ALREADY_EXITED", "nik"))
        elif ex.effective_date < row["enrolled_at"].astimezone(now_local().tzinfo).date():
            reasons.append(reason("EXIT_BEFORE_ENROLMENT", "effective_date"))
        if reasons or row is None:
            _reject(outbox, m, ex.agency, ex.request_id, ex.nik, reasons)
            await _record_submissions(
                conn,
                [
                    (
                        ex.agency,
                        ex.request_id,
                        "exit",
                        "rejected",
                        [r.model_dump() for r in reasons],
                        None,
                        m.id,
                    )
                ],
            )
            continue
        pid = row["participant_id"]
        await conn.execute(
            "UPDATE participants SET exited_on = $2, exit_reason = $3 WHERE participant_id = $1",
            pid,
            ex.effective_date,
            ex.reason.value,
        )
        await conn.execute(
            "INSERT INTO audit_log (participant_id, agency, request_id, action, changes) "
            "VALUES ($1, $2, $3, 'exited', $4)",
            pid,
            ex.agency,
            ex.request_id,
            {"exited_on": ex.effective_date.isoformat(), "exit_reason": ex.reason.value},
        )
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
        outbox.add(PARTICIPANTS.name, pid, event, m.trace_headers)
        await _record_submissions(
            conn, [(ex.agency, ex.request_id, "exit", "accepted", [], pid, m.id)]
        )


async def handle_intake(conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox) -> None:
    """Apply a batch in arrival order, consecutive messages of one type together."""
    for event_type, group in itertools.groupby(messages, key=lambda m: m.type):
        run = list(group)
        if event_type == EnrolmentSubmitted.event_type:
            await handle_enrolments(conn, run, outbox)
        elif event_type == ExitReported.event_type:
            await handle_exits(conn, run, outbox)
        else:
            for m in run:
                agency, request_id, nik = _identity(m.envelope.data)
                _reject(outbox, m, agency, request_id, nik, [reason("UNKNOWN_EVENT_TYPE", "type")])


def on_undecodable(record: Record, error: str, outbox: Outbox) -> None:
    """Not JSON or not an envelope: dead-lettered by the consumer; answer if we can tell who."""
    headers = record_headers(record)
    agency = headers.get("agency") or headers.get("ce_source", "").removeprefix("agency/") or None
    request_id = headers.get("request_id") or headers.get("ce_id")
    if not agency or not request_id:
        return
    _reject(outbox, None, agency, request_id, None, [reason("SCHEMA_INVALID", None, error[:200])])
