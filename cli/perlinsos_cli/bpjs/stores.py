"""What the BPJS commands read, each from the store of the service that owns it:
eligibility (who holds a place on a line), registry (who they are, their KPJ, the replies
to an answer file), premium (what the ledger owes for a line and month)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg

from perlinsos_cli.bpjs.invoice import Owed
from perlinsos_cli.bpjs.registrations import Registrant


async def eligible_on_line(
    eligibility: asyncpg.Pool, line: str, since: date | None
) -> dict[str, tuple[date, str]]:
    """participant id -> (cover start, line) of everyone holding a place on `line`."""
    rows = await eligibility.fetch(
        "SELECT participant_id, cover_start, funding_line FROM participants"
        " WHERE outcome = 'eligible' AND funding_line = $1 AND cover_start IS NOT NULL"
        " AND ($2::date IS NULL OR decided_at >= $2::date)",
        line,
        since,
    )
    return {r["participant_id"]: (r["cover_start"], r["funding_line"]) for r in rows}


async def registrants(
    registry: asyncpg.Pool, places: dict[str, tuple[date, str]]
) -> list[Registrant]:
    """Those of `places` with no KPJ and not refused as members already (a person BPJS
    refused for other reasons is listed again: the next list carries the corrected data)."""
    rows = await registry.fetch(
        "SELECT participant_id, nik, full_name, birth_date, sex, phone_e164, address,"
        " occupation FROM participants WHERE participant_id = ANY($1::text[])"
        " AND exited_on IS NULL AND bpjs_kpj IS NULL"
        " AND bpjs_answer IS DISTINCT FROM 'ALREADY_BPJS_MEMBER' ORDER BY nik",
        list(places),
    )
    return [
        Registrant(
            nik=r["nik"],
            full_name=r["full_name"],
            birth_date=r["birth_date"],
            sex=r["sex"],
            phone_e164=r["phone_e164"],
            address=r["address"],
            occupation=r["occupation"],
            cover_start=places[r["participant_id"]][0],
            funding_line=places[r["participant_id"]][1],
        )
        for r in rows
    ]


async def known_niks(registry: asyncpg.Pool, niks: Sequence[str]) -> set[str]:
    rows = await registry.fetch(
        "SELECT nik FROM participants WHERE nik = ANY($1::text[])", list(niks)
    )
    return {r["nik"] for r in rows}


async def replies(registry: asyncpg.Pool, import_id: str) -> dict[int, str]:
    """Row -> what registry did with it (stored, unchanged, UNKNOWN_NIK)."""
    rows = await registry.fetch(
        "SELECT row_number, status FROM bpjs_answers WHERE import_id = $1", import_id
    )
    return {r["row_number"]: r["status"] for r in rows}


async def niks_of_kpjs(registry: asyncpg.Pool, kpjs: Sequence[str]) -> dict[str, str]:
    rows = await registry.fetch(
        "SELECT bpjs_kpj, nik FROM participants WHERE bpjs_kpj = ANY($1::text[])", list(kpjs)
    )
    return {r["bpjs_kpj"]: r["nik"] for r in rows}


async def owed(premium: asyncpg.Pool, line: str, period: str) -> dict[str, Owed]:
    """NIK -> what the ledger bills for `line` in `period` (one month, JKK + JKM)."""
    rows = await premium.fetch(
        "SELECT p.nik, p.full_name, l.jkk_idr + l.jkm_idr AS amount"
        " FROM ledger l JOIN people p USING (participant_id)"
        " WHERE l.funding_line = $1 AND l.period = $2",
        line,
        period,
    )
    return {r["nik"]: Owed(r["nik"], r["full_name"], int(r["amount"])) for r in rows}
