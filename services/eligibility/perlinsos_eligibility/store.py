"""Eligibility's own tables (the database adapter). Set-based: one statement per batch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal

import asyncpg

from perlinsos_eligibility.domain import Applicant
from perlinsos_shared.events import Address, EligibilityDecided, FundingLine, Occupation
from perlinsos_shared.sql import insert_rows

_PERSON_TYPES = (
    ("participant_id", "text"),
    ("occupation", "text"),
    ("funding_line", "text"),
    ("birth_date", "date"),
    ("address", "json"),
    ("existing_bpjs_tk", "bool"),
    ("first_name", "text"),
    ("phone_e164", "text"),
    ("agency", "text"),
    ("request_id", "text"),
    ("enrolled_at", "timestamptz"),
    ("outcome", "text"),
    ("cover_start", "date"),
    ("cover_end", "date"),
    ("rule_version", "text"),
    ("decided_at", "timestamptz"),
    ("nik_hash", "text"),
    ("decision_id", "text"),
    ("reasons", "json"),
    ("full_name", "text"),
    ("sex", "text"),
)
# The checks of a participant's current state are those of the decision that put them
# there (`decision_id`), kept once in `decisions`; rows decided before migration 0004
# have no decision_id and their checks in `participants.checks`, which nothing writes now.
_PERSON_COLUMNS = (
    ", ".join(name for name, _ in _PERSON_TYPES) + ", coalesce((SELECT d.checks FROM decisions d"
    " WHERE d.decision_id = participants.decision_id), participants.checks::json) AS checks"
)
# A participant seen again: every column but the key takes the new value.
_PERSON_UPSERT = "ON CONFLICT (participant_id) DO UPDATE SET " + ", ".join(
    f"{name} = excluded.{name}" for name, _ in _PERSON_TYPES[1:]
)


@dataclass(frozen=True)
class Person:
    """What eligibility keeps of one participant and where they stand."""

    participant_id: str
    occupation: Occupation
    birth_date: date
    address: Address
    existing_bpjs_tk: bool
    first_name: str
    phone_e164: str
    agency: str
    request_id: str
    enrolled_at: datetime
    nik_hash: str | None
    funding_line: FundingLine | None = None
    outcome: str = "new"
    cover_start: date | None = None
    cover_end: date | None = None
    rule_version: str = ""
    decided_at: datetime | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)
    # The decision that put the participant where they stand (its checks are `checks`);
    # None until one is published.
    decision_id: str | None = None
    # Held only while the enrolment that carried it is decided (for notify's lookup by
    # NIK); never stored: eligibility keeps the pseudonym above.
    nik: str | None = field(default=None, compare=False, repr=False)
    # How SMS address the person (notify picks the name word); None for people enrolled
    # before eligibility kept them.
    full_name: str | None = field(default=None, repr=False)
    sex: Literal["L", "P"] | None = None

    @property
    def applicant(self) -> Applicant:
        return Applicant(self.birth_date, self.address, self.occupation, self.existing_bpjs_tk)

    def but(self, **changes: Any) -> Person:
        return replace(self, **changes)


def _person(row: asyncpg.Record) -> Person:
    return Person(
        participant_id=row["participant_id"],
        occupation=Occupation(row["occupation"]),
        birth_date=row["birth_date"],
        address=Address.model_validate(row["address"]),
        existing_bpjs_tk=row["existing_bpjs_tk"],
        first_name=row["first_name"],
        phone_e164=row["phone_e164"],
        agency=row["agency"],
        request_id=row["request_id"],
        enrolled_at=row["enrolled_at"],
        nik_hash=row["nik_hash"],
        funding_line=FundingLine(row["funding_line"]) if row["funding_line"] else None,
        outcome=row["outcome"],
        cover_start=row["cover_start"],
        cover_end=row["cover_end"],
        rule_version=row["rule_version"],
        decided_at=row["decided_at"],
        checks=list(row["checks"] or []),
        reasons=list(row["reasons"] or []),
        decision_id=row["decision_id"],
        full_name=row["full_name"],
        sex=row["sex"] if row["sex"] in ("L", "P") else None,
    )


async def people(conn: asyncpg.Connection, ids: Sequence[str], *, lock: bool) -> dict[str, Person]:
    rows = await conn.fetch(
        f"SELECT {_PERSON_COLUMNS} FROM participants WHERE participant_id = ANY($1::text[])"
        + (" ORDER BY participant_id FOR UPDATE OF participants" if lock else ""),
        list(ids),
    )
    return {r["participant_id"]: _person(r) for r in rows}


async def by_nik_hash(conn: asyncpg.Connection, nik_hashes: Sequence[str]) -> Person | None:
    """The participant with one of these NIK pseudonyms (current key first, then older)."""
    row = await conn.fetchrow(
        f"SELECT {_PERSON_COLUMNS} FROM participants WHERE nik_hash = ANY($1::text[])"
        " ORDER BY enrolled_at DESC LIMIT 1",
        list(nik_hashes),
    )
    return _person(row) if row else None


async def of_line(conn: asyncpg.Connection, line: FundingLine) -> list[Person]:
    """Every participant of a line who has not exited, in arrival order."""
    rows = await conn.fetch(
        f"SELECT {_PERSON_COLUMNS} FROM participants"
        " WHERE funding_line = $1 AND outcome <> 'exited' ORDER BY enrolled_at, participant_id",
        line.value,
    )
    return [_person(r) for r in rows]


async def oldest_waiting(
    conn: asyncpg.Connection, line: FundingLine, limit: int, skip: Iterable[str] = ()
) -> list[Person]:
    """The oldest waitlisted of a line (caller holds the line's lock)."""
    rows = await conn.fetch(
        f"SELECT {_PERSON_COLUMNS} FROM participants"
        " WHERE funding_line = $1 AND outcome = 'waitlisted'"
        " AND NOT (participant_id = ANY($3::text[]))"
        " ORDER BY enrolled_at, participant_id LIMIT $2",
        line.value,
        limit,
        list(skip),
    )
    return [_person(r) for r in rows]


@dataclass
class Places:
    """A line's counter row, read under FOR UPDATE and written back at the end."""

    funding_line: FundingLine
    holders: int
    waiting: int


_LOCK_LINES = (
    "SELECT funding_line, holders, waiting FROM line_places"
    " WHERE funding_line = ANY($1::text[]) ORDER BY funding_line FOR UPDATE"
)


async def lock_lines(conn: asyncpg.Connection, lines: Iterable[FundingLine]) -> dict[str, Places]:
    """Lock the counter rows of `lines` (always in name order: no deadlocks)."""
    wanted = sorted({line.value for line in lines})
    if not wanted:
        return {}
    rows = await conn.fetch(_LOCK_LINES, wanted)
    if len(rows) < len(wanted):  # a line without its row yet (migration 0002 made three)
        await insert_rows(
            conn,
            "line_places",
            (("funding_line", "text"),),
            [(line,) for line in wanted],
            then="ON CONFLICT (funding_line) DO NOTHING",
        )
        rows = await conn.fetch(_LOCK_LINES, wanted)
    return {
        r["funding_line"]: Places(FundingLine(r["funding_line"]), r["holders"], r["waiting"])
        for r in rows
    }


async def save_places(conn: asyncpg.Connection, places: Iterable[Places]) -> None:
    rows = list(places)
    if not rows:
        return
    await conn.execute(
        "UPDATE line_places p SET holders = u.holders, waiting = u.waiting, updated_at = now()"
        " FROM unnest($1::text[], $2::int[], $3::int[]) AS u(funding_line, holders, waiting)"
        " WHERE p.funding_line = u.funding_line",
        [p.funding_line.value for p in rows],
        [p.holders for p in rows],
        [p.waiting for p in rows],
    )


async def read_places(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT p.funding_line, p.holders, p.waiting,"
            " (SELECT count(*) FROM participants x WHERE x.funding_line = p.funding_line"
            "   AND x.outcome = 'eligible') AS counted_holders,"
            " (SELECT count(*) FROM participants x WHERE x.funding_line = p.funding_line"
            "   AND x.outcome = 'waitlisted') AS counted_waiting"
            " FROM line_places p ORDER BY p.funding_line"
        )
    )


async def save_people(conn: asyncpg.Connection, batch: Sequence[Person]) -> None:
    """Insert or update participants, one statement for the whole batch."""
    if not batch:
        return
    rows = [
        (
            p.participant_id,
            p.occupation.value,
            p.funding_line.value if p.funding_line else None,
            p.birth_date,
            p.address.model_dump(),
            p.existing_bpjs_tk,
            p.first_name,
            p.phone_e164,
            p.agency,
            p.request_id,
            p.enrolled_at,
            p.outcome,
            p.cover_start,
            p.cover_end,
            p.rule_version,
            p.decided_at,
            p.nik_hash,
            p.decision_id,
            p.reasons,
            p.full_name,
            p.sex,
        )
        for p in batch
    ]
    await insert_rows(conn, "participants", _PERSON_TYPES, rows, then=_PERSON_UPSERT)


_DECISION_COLUMNS = (
    ("decision_id", "text"),
    ("participant_id", "text"),
    ("outcome", "text"),
    ("funding_line", "text"),
    ("reasons", "json"),
    ("cover_start", "date"),
    ("cover_end", "date"),
    ("rule_version", "text"),
    ("decided_at", "timestamptz"),
    ("promoted", "bool"),
    ("checks", "json"),
)


async def save_decisions(
    conn: asyncpg.Connection, decisions: Sequence[tuple[EligibilityDecided, list[dict[str, Any]]]]
) -> None:
    rows = [
        (
            d.decision_id,
            d.participant_id,
            d.outcome,
            d.funding_line.value if d.funding_line else None,
            [r.model_dump() for r in d.reasons],
            d.cover_start,
            d.cover_end,
            d.rule_version,
            d.decided_at,
            d.promoted,
            checks,
        )
        for d, checks in decisions
    ]
    await insert_rows(conn, "decisions", _DECISION_COLUMNS, rows)


async def decision_history(conn: asyncpg.Connection, participant_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT decision_id, outcome, funding_line, reasons, cover_start, cover_end,"
            " rule_version, decided_at, promoted, checks FROM decisions"
            " WHERE participant_id = $1 ORDER BY decided_at, decision_id",
            participant_id,
        )
    )


async def places_on_line(
    db: asyncpg.Pool | asyncpg.Connection, line: str, since: date | None = None
) -> dict[str, tuple[date, str]]:
    """participant id -> (cover start, line) of everyone holding a place on `line` (decided
    on or after `since`, when given)."""
    rows = await db.fetch(
        "SELECT participant_id, cover_start, funding_line FROM participants"
        " WHERE outcome = 'eligible' AND funding_line = $1 AND cover_start IS NOT NULL"
        " AND ($2::date IS NULL OR decided_at >= $2::date)",
        line,
        since,
    )
    return {r["participant_id"]: (r["cover_start"], r["funding_line"]) for r in rows}
