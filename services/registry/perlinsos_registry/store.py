"""Registry's state: what an intake plan is decided against, and writing the plan.

Two stores with one contract: `PgIntakeStore` (PostgreSQL, set-based statements, the
service's) and `MemoryIntakeStore` (dicts, for the handler's test cases). Both record the
same things; the handler tests run one set of cases against each.

`load` reads the participants of the batch's NIKs under `FOR UPDATE` (so an exit or a
re-enrolment works on a row nobody else changes meanwhile) and which (agency, request_id)
pairs are already recorded. What it cannot lock is a row that does not exist yet: a new
NIK or pair that another instance records between `load` and `write`. `write` then
returns False (its statements undone by a savepoint) and the handler loads and plans again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from perlinsos_registry.intake import (
    AuditRow,
    Claim,
    Enrolment,
    IntakePlan,
    KnownState,
    Member,
    Pair,
    batam_date,
)
from perlinsos_shared.events import Occupation
from perlinsos_shared.sql import column_arrays, insert_rows, unnest_select


class IntakeStore(Protocol):
    async def load(self, pairs: Collection[Pair], niks: Collection[str]) -> KnownState: ...

    async def write(self, plan: IntakePlan) -> bool:
        """Record the plan; False when another writer got a new NIK or pair first."""
        ...


class _Lost(Exception):
    """A row the plan creates was created by someone else first."""


_SUBMISSION_COLUMNS = (
    ("agency", "text"),
    ("request_id", "text"),
    ("kind", "text"),
    ("outcome", "text"),
    ("reasons", "json"),
    ("participant_id", "text"),
    ("event_id", "text"),
    ("nik", "text"),
)
_PARTICIPANT_COLUMNS = (
    ("participant_id", "text"),
    ("nik", "text"),
    ("full_name", "text"),
    ("birth_date", "date"),
    ("sex", "text"),
    ("phone_e164", "text"),
    ("address", "json"),
    ("occupation", "text"),
    ("evidence", "json"),
    ("existing_bpjs_tk", "bool"),
    ("agency", "text"),
    ("request_id", "text"),
    ("enrolled_at", "timestamptz"),
    ("membership", "int4"),
)
_MEMBERSHIP_COLUMNS = (
    ("participant_id", "text"),
    ("membership", "int4"),
    ("agency", "text"),
    ("request_id", "text"),
    ("occupation", "text"),
    ("enrolled_at", "timestamptz"),
)
_AUDIT_COLUMNS = (
    ("participant_id", "text"),
    ("agency", "text"),
    ("request_id", "text"),
    ("action", "text"),
    ("changes", "json"),
)
_EXIT_COLUMNS = (
    ("participant_id", "text"),
    ("membership", "int4"),
    ("exited_on", "date"),
    ("exit_reason", "text"),
)


def _claim_row(c: Claim) -> tuple[Any, ...]:
    reasons = [r.model_dump() for r in c.reasons]
    return (c.agency, c.request_id, c.kind, c.outcome, reasons, c.participant_id, c.event_id, c.nik)


def _participant_row(e: Enrolment) -> tuple[Any, ...]:
    s = e.submission
    return (
        e.participant_id,
        s.nik,
        e.full_name,
        s.birth_date,
        s.sex,
        e.phone_e164,
        s.address.model_dump(),
        s.occupation.value,
        s.evidence.model_dump(exclude_none=True),
        s.existing_bpjs_tk,
        s.agency,
        s.request_id,
        e.enrolled_at,
        e.membership,
    )


def _membership_row(e: Enrolment) -> tuple[Any, ...]:
    s = e.submission
    return (
        e.participant_id,
        e.membership,
        s.agency,
        s.request_id,
        s.occupation.value,
        e.enrolled_at,
    )


def _audit_row(a: AuditRow) -> tuple[Any, ...]:
    return (a.participant_id, a.agency, a.request_id, a.action, a.changes)


def _member(row: Any) -> Member:
    """A participants row (an asyncpg record or the memory store's dict) as the plan sees it."""
    return Member(
        participant_id=row["participant_id"],
        occupation=Occupation(row["occupation"]),
        enrolled_on=batam_date(row["enrolled_at"]),
        exited_on=row["exited_on"],
        agency=row["agency"],
        membership=row["membership"],
    )


def _exit_rows(plan: IntakePlan) -> list[tuple[Any, ...]]:
    return [
        (x.participant_id, x.membership, x.exit.effective_date, x.exit.reason.value)
        for x in plan.exits
    ]


@dataclass
class PgIntakeStore:
    conn: asyncpg.Connection

    async def load(self, pairs: Collection[Pair], niks: Collection[str]) -> KnownState:
        members: dict[str, Member] = {}
        if niks:
            rows = await self.conn.fetch(
                "SELECT participant_id, nik, agency, occupation, enrolled_at, exited_on,"
                " membership FROM participants WHERE nik = ANY($1::text[])"
                " ORDER BY nik FOR UPDATE",
                list(niks),
            )
            members = {r["nik"]: _member(r) for r in rows}
        claimed: frozenset[Pair] = frozenset()
        if pairs:
            agencies, request_ids = column_arrays((("a", "text"), ("r", "text")), list(pairs))
            rows = await self.conn.fetch(
                "SELECT s.agency, s.request_id FROM submissions s"
                " JOIN unnest($1::text[], $2::text[]) AS t(a, r)"
                " ON s.agency = t.a AND s.request_id = t.r",
                agencies,
                request_ids,
            )
            claimed = frozenset((r["agency"], r["request_id"]) for r in rows)
        return KnownState(claimed, members)

    async def write(self, plan: IntakePlan) -> bool:
        try:
            async with self.conn.transaction():  # a savepoint inside the batch's transaction
                await self._write(plan)
        except _Lost:
            return False
        return True

    async def _write(self, plan: IntakePlan) -> None:
        conn = self.conn
        then = "ON CONFLICT DO NOTHING RETURNING 1"
        claims = [_claim_row(c) for c in plan.claims]
        if len(
            await insert_rows(conn, "submissions", _SUBMISSION_COLUMNS, claims, then=then)
        ) < len(claims):
            raise _Lost
        first = [_participant_row(e) for e in plan.enrolments if e.membership == 1]
        if len(
            await insert_rows(conn, "participants", _PARTICIPANT_COLUMNS, first, then=then)
        ) < len(first):
            raise _Lost
        again = [_participant_row(e) for e in plan.enrolments if e.membership > 1]
        if again:
            # The row was read FOR UPDATE: it is still the previous membership.
            names = [name for name, _ in _PARTICIPANT_COLUMNS[1:]]
            await conn.execute(
                "UPDATE participants p SET "
                + ", ".join(f"{n} = t.{n}" for n in names)
                + ", exited_on = NULL, exit_reason = NULL FROM ("
                + unnest_select(_PARTICIPANT_COLUMNS)
                + ") AS t WHERE p.participant_id = t.participant_id",
                *column_arrays(_PARTICIPANT_COLUMNS, again),
            )
        await insert_rows(
            conn, "memberships", _MEMBERSHIP_COLUMNS, [_membership_row(e) for e in plan.enrolments]
        )
        exits = _exit_rows(plan)
        if exits:
            arrays = column_arrays(_EXIT_COLUMNS, exits)
            select = unnest_select(_EXIT_COLUMNS)
            await conn.execute(
                "UPDATE memberships m SET exited_on = t.exited_on, exit_reason = t.exit_reason"
                f" FROM ({select}) AS t"
                " WHERE m.participant_id = t.participant_id AND m.membership = t.membership",
                *arrays,
            )
            # The participant row tells the current membership: only its exit shows there.
            await conn.execute(
                "UPDATE participants p SET exited_on = t.exited_on, exit_reason = t.exit_reason"
                f" FROM ({select}) AS t"
                " WHERE p.participant_id = t.participant_id AND p.membership = t.membership",
                *arrays,
            )
        await insert_rows(conn, "audit_log", _AUDIT_COLUMNS, [_audit_row(a) for a in plan.audit])


@dataclass
class MemoryIntakeStore:
    """The same records in dicts: what the PostgreSQL tables hold, row for row."""

    submissions: dict[Pair, dict[str, Any]] = field(default_factory=dict)
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)  # by NIK
    memberships: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    audit_log: list[dict[str, Any]] = field(default_factory=list)

    async def load(self, pairs: Collection[Pair], niks: Collection[str]) -> KnownState:
        members = {nik: _member(p) for nik in niks if (p := self.participants.get(nik)) is not None}
        return KnownState(frozenset(p for p in pairs if p in self.submissions), members)

    async def write(self, plan: IntakePlan) -> bool:
        if any((c.agency, c.request_id) in self.submissions for c in plan.claims) or any(
            e.submission.nik in self.participants for e in plan.enrolments if e.membership == 1
        ):
            return False
        for c in plan.claims:
            row = dict(zip((n for n, _ in _SUBMISSION_COLUMNS), _claim_row(c), strict=True))
            self.submissions[(c.agency, c.request_id)] = row
        for e in plan.enrolments:
            row = dict(zip((n for n, _ in _PARTICIPANT_COLUMNS), _participant_row(e), strict=True))
            self.participants[e.submission.nik] = {**row, "exited_on": None, "exit_reason": None}
            key = (e.participant_id, e.membership)
            names = (n for n, _ in _MEMBERSHIP_COLUMNS)
            self.memberships[key] = {
                **dict(zip(names, _membership_row(e), strict=True)),
                "exited_on": None,
                "exit_reason": None,
            }
        by_id = {p["participant_id"]: p for p in self.participants.values()}
        for pid, membership, exited_on, exit_reason in _exit_rows(plan):
            self.memberships[(pid, membership)].update(exited_on=exited_on, exit_reason=exit_reason)
            if by_id[pid]["membership"] == membership:
                by_id[pid].update(exited_on=exited_on, exit_reason=exit_reason)
        for a in plan.audit:
            self.audit_log.append(
                dict(zip((n for n, _ in _AUDIT_COLUMNS), _audit_row(a), strict=True))
            )
        return True


# --- what `perlinsos bpjs` reads -------------------------------------------------------------


async def to_register_with_bpjs(
    db: asyncpg.Pool | asyncpg.Connection, participant_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """Those of `participant_ids` with no KPJ and not refused as members already (a person
    BPJS refused for other reasons is listed again: the next list carries the corrected
    data), by NIK: participant_id, nik, full_name, birth_date, sex, phone_e164, address,
    occupation."""
    return list(
        await db.fetch(
            "SELECT participant_id, nik, full_name, birth_date, sex, phone_e164, address,"
            " occupation FROM participants WHERE participant_id = ANY($1::text[])"
            " AND exited_on IS NULL AND bpjs_kpj IS NULL"
            " AND bpjs_answer IS DISTINCT FROM 'ALREADY_BPJS_MEMBER' ORDER BY nik",
            list(participant_ids),
        )
    )


async def known_niks(db: asyncpg.Pool | asyncpg.Connection, niks: Sequence[str]) -> set[str]:
    """Which of `niks` registry has a participant for."""
    rows = await db.fetch("SELECT nik FROM participants WHERE nik = ANY($1::text[])", list(niks))
    return {r["nik"] for r in rows}


async def bpjs_replies(db: asyncpg.Pool | asyncpg.Connection, import_id: str) -> dict[int, str]:
    """Row of a BPJS answer file -> what registry did with it (stored, unchanged, UNKNOWN_NIK)."""
    rows = await db.fetch(
        "SELECT row_number, status FROM bpjs_answers WHERE import_id = $1", import_id
    )
    return {r["row_number"]: r["status"] for r in rows}


async def niks_of_kpjs(
    db: asyncpg.Pool | asyncpg.Connection, kpjs: Sequence[str]
) -> dict[str, str]:
    """KPJ -> NIK of the participants BPJS gave these KPJs."""
    rows = await db.fetch(
        "SELECT bpjs_kpj, nik FROM participants WHERE bpjs_kpj = ANY($1::text[])", list(kpjs)
    )
    return {r["bpjs_kpj"]: r["nik"] for r in rows}
