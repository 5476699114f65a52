"""BPJS Ketenagakerjaan's answers (`bpjs.memberships.v1`): stored with the participant.

A KPJ and BPJS's cover start, or a refusal, for one NIK. Registry stores it on the
participant, writes it to the audit log (`perlinsos registry audit` shows it), records a
reply for the answer file's row, and announces it on `registry.participants.v1` so
eligibility can decide again (a refusal for existing membership, or a cover start that
differs from the programme's). The same answer again changes nothing and announces
nothing. An unknown NIK is a reply, not an error; an event that does not fit the contract
goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncpg
from pydantic import ValidationError

from perlinsos_shared.consumer import Incoming, dead_letter
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import BpjsMembershipAnswered, ParticipantBpjsAnswered
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import BPJS_MEMBERSHIPS, PARTICIPANTS

SOURCE = "perlinsos/registry"
AGENCY = "BPJS-TK"  # who made the change, in the audit log


async def handle_memberships(
    conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
) -> None:
    for m in messages:
        try:
            a = BpjsMembershipAnswered.model_validate(m.envelope.data)
        except ValidationError as exc:
            dead_letter(outbox, BPJS_MEMBERSHIPS, m.record, f"SCHEMA_INVALID: {exc}"[:500])
            continue
        await _store(conn, a, m, outbox)


async def _store(
    conn: asyncpg.Connection, a: BpjsMembershipAnswered, m: Incoming, outbox: Outbox
) -> None:
    p = await conn.fetchrow(
        "SELECT participant_id, bpjs_answer, bpjs_kpj, bpjs_cover_start, bpjs_refusal"
        " FROM participants WHERE nik = $1 FOR UPDATE",
        a.nik,
    )
    if p is None:
        await _reply(conn, a, "UNKNOWN_NIK", None)
        return
    pid = p["participant_id"]
    old = {
        "bpjs_answer": p["bpjs_answer"],
        "bpjs_kpj": p["bpjs_kpj"],
        "bpjs_cover_start": p["bpjs_cover_start"],
        "bpjs_refusal": p["bpjs_refusal"],
    }
    new = {
        "bpjs_answer": a.answer,
        "bpjs_kpj": a.kpj,
        "bpjs_cover_start": a.cover_start,
        "bpjs_refusal": a.refusal,
    }
    if old == new:
        await _reply(conn, a, "unchanged", pid)
        return
    await conn.execute(
        "UPDATE participants SET bpjs_answer = $2, bpjs_kpj = $3, bpjs_cover_start = $4,"
        " bpjs_refusal = $5, bpjs_answered_at = now() WHERE participant_id = $1",
        pid,
        a.answer,
        a.kpj,
        a.cover_start,
        a.refusal,
    )
    changes = {k: {"old": _plain(old[k]), "new": _plain(new[k])} for k in new if old[k] != new[k]}
    await conn.execute(
        "INSERT INTO audit_log (participant_id, agency, request_id, action, changes)"
        " VALUES ($1, $2, $3, 'bpjs_answer', $4)",
        pid,
        AGENCY,
        f"{a.import_id[:16]}:{a.row}",
        changes,  # the pool's json codec encodes it
    )
    await _reply(conn, a, "stored", pid)
    event = ParticipantBpjsAnswered(
        participant_id=pid,
        answer=a.answer,
        kpj=a.kpj,
        cover_start=a.cover_start,
        refusal=a.refusal,
        import_id=a.import_id,
        row=a.row,
    )
    outbox.add(PARTICIPANTS.name, pid, make_event(SOURCE, event, subject=pid), m.trace_headers)


def _plain(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


async def _reply(
    conn: asyncpg.Connection, a: BpjsMembershipAnswered, status: str, pid: str | None
) -> None:
    await conn.execute(
        "INSERT INTO bpjs_answers (import_id, row_number, status, participant_id)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (import_id, row_number) DO NOTHING",
        a.import_id,
        a.row,
        status,
        pid,
    )
