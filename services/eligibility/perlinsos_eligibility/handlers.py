"""Eligibility's Kafka handler: a decision per enrolment, an `exited` decision per exit."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from perlinsos_eligibility.domain import Applicant, decide
from perlinsos_eligibility.rules import load_rules
from perlinsos_shared.clock import now_local
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import EligibilityDecided, ParticipantEnrolled, ParticipantExited
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import DECISIONS

SOURCE = "perlinsos/eligibility"


def first_name(full_name: str) -> str:
    parts = full_name.split()
    return parts[0] if parts else full_name


async def _enrolled(
    conn: asyncpg.Connection,
    m: Incoming,
    outbox: Outbox,
    rows: list[tuple[Any, ...]],
    decisions: list[tuple[Any, ...]],
) -> None:
    p = ParticipantEnrolled.model_validate(m.envelope.data)
    rules = load_rules()
    decided_at = now_local()
    cover_start = decided_at.date()
    verdict = decide(
        Applicant(p.birth_date, p.address, p.occupation, p.existing_bpjs_tk), rules, cover_start
    )
    decision = EligibilityDecided(
        decision_id=str(uuid.uuid4()),
        participant_id=p.participant_id,
        outcome="eligible" if verdict.outcome == "eligible" else "ineligible",
        reasons=verdict.reasons,
        funding_line=verdict.funding_line,
        cover_start=cover_start if verdict.outcome == "eligible" else None,
        rule_version=rules.version,
        occupation=p.occupation,
        agency=p.agency,
        request_id=p.request_id,
        first_name=first_name(p.full_name),
        phone_e164=p.phone_e164,
        decided_at=decided_at,
    )
    rows.append(
        (
            p.participant_id,
            p.occupation.value,
            verdict.funding_line,
            p.birth_date,
            p.address.model_dump(),
            p.existing_bpjs_tk,
            decision.first_name,
            p.phone_e164,
            p.agency,
            p.request_id,
            p.enrolled_at,
            decision.outcome,
            decision.cover_start,
            rules.version,
            decided_at,
        )
    )
    decisions.append(_decision_row(decision))
    outbox.add(
        DECISIONS.name,
        p.participant_id,
        make_event(SOURCE, decision, subject=p.participant_id),
        m.trace_headers,
    )


def _decision_row(d: EligibilityDecided) -> tuple[Any, ...]:
    return (
        d.decision_id,
        d.participant_id,
        d.outcome,
        d.funding_line,
        [r.model_dump() for r in d.reasons],
        d.cover_start,
        d.cover_end,
        d.rule_version,
        d.decided_at,
    )


async def _flush(
    conn: asyncpg.Connection, rows: list[tuple[Any, ...]], decisions: list[tuple[Any, ...]]
) -> None:
    if rows:
        await conn.executemany(
            "INSERT INTO participants (participant_id, occupation, funding_line, birth_date,"
            " address, existing_bpjs_tk, first_name, phone_e164, agency, request_id, enrolled_at,"
            " outcome, cover_start, rule_version, decided_at) VALUES"
            " ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
            " ON CONFLICT (participant_id) DO NOTHING",
            rows,
        )
        rows.clear()
    if decisions:
        await conn.executemany(
            "INSERT INTO decisions (decision_id, participant_id, outcome, funding_line, reasons,"
            " cover_start, cover_end, rule_version, decided_at)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            decisions,
        )
        decisions.clear()


async def _exited(conn: asyncpg.Connection, m: Incoming, outbox: Outbox) -> None:
    ex = ParticipantExited.model_validate(m.envelope.data)
    row = await conn.fetchrow(
        "SELECT * FROM participants WHERE participant_id = $1 FOR UPDATE", ex.participant_id
    )
    if row is None:
        raise LookupError("exit for a participant eligibility has not seen")
    decided_at = now_local()
    decision = EligibilityDecided(
        decision_id=str(uuid.uuid4()),
        participant_id=ex.participant_id,
        outcome="exited",
        funding_line=row["funding_line"],
        cover_start=row["cover_start"],
        cover_end=ex.effective_date,
        rule_version=row["rule_version"],
        occupation=row["occupation"],
        agency=ex.agency,
        request_id=ex.request_id,
        first_name=row["first_name"],
        phone_e164=row["phone_e164"],
        decided_at=decided_at,
    )
    await conn.execute(
        "UPDATE participants SET outcome = 'exited', cover_end = $2, decided_at = $3"
        " WHERE participant_id = $1",
        ex.participant_id,
        ex.effective_date,
        decided_at,
    )
    await _flush(conn, [], [_decision_row(decision)])
    outbox.add(
        DECISIONS.name,
        ex.participant_id,
        make_event(SOURCE, decision, subject=ex.participant_id),
        m.trace_headers,
    )


async def handle_participants(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    rows: list[tuple[Any, ...]] = []
    decisions: list[tuple[Any, ...]] = []
    for m in messages:
        if m.type == ParticipantEnrolled.event_type:
            await _enrolled(conn, m, outbox, rows, decisions)
        elif m.type == ParticipantExited.event_type:
            await _flush(conn, rows, decisions)
            await _exited(conn, m, outbox)
        else:
            raise ValueError(f"unknown event type {m.type!r}")
    await _flush(conn, rows, decisions)
