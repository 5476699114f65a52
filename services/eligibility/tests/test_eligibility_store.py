"""Eligibility's tables against a real PostgreSQL (no broker): where a participant's
checks are kept (migration 0004)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime

import asyncpg
import pytest

from perlinsos_eligibility.store import Person, people, save_decisions, save_people
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.db import open_service_db
from perlinsos_shared.events import Address, EligibilityDecided, FundingLine, Occupation

pytestmark = pytest.mark.db  # PostgreSQL only: no broker, no service process

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=BATAM_TZ)
CHECKS = [{"rule": "AGE", "passed": True, "detail": "umur 40", "reason": None, "params": {}}]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_service_db(database_url, "eligibility", pool_size=2)
    yield p
    await p.close()


def person(decision_id: str | None) -> Person:
    return Person(
        participant_id=str(uuid.uuid4()),
        occupation=Occupation.NELAYAN,
        birth_date=date(1986, 3, 4),
        address=Address(kecamatan="Sekupang", kelurahan="Tiban Lama", rt="001", rw="002"),
        existing_bpjs_tk=False,
        first_name="Rina",
        phone_e164="+6281234567890",
        agency="DKP",
        request_id="r-1",
        enrolled_at=NOW,
        nik_hash="h",
        funding_line=FundingLine.PERWAKO_3_2023,
        outcome="eligible",
        cover_start=NOW.date(),
        rule_version="PERWAKO-3-2023@test",
        decided_at=NOW,
        checks=CHECKS,
        decision_id=decision_id,
    )


def decided(p: Person) -> EligibilityDecided:
    assert p.decision_id is not None and p.funding_line is not None
    return EligibilityDecided(
        decision_id=p.decision_id,
        participant_id=p.participant_id,
        outcome="eligible",
        funding_line=p.funding_line,
        cover_start=p.cover_start,
        rule_version=p.rule_version,
        occupation=p.occupation,
        agency=p.agency,
        request_id=p.request_id,
        first_name=p.first_name,
        phone_e164=p.phone_e164,
        decided_at=NOW,
    )


async def test_checks_are_kept_once_with_the_decision(pool: asyncpg.Pool) -> None:
    p = person(str(uuid.uuid4()))
    async with pool.acquire() as conn, conn.transaction():
        await save_people(conn, [p])
        await save_decisions(conn, [(decided(p), CHECKS)])
    async with pool.acquire() as conn, conn.transaction():
        for lock in (False, True):
            read = (await people(conn, [p.participant_id], lock=lock))[p.participant_id]
            assert read.checks == CHECKS and read.decision_id == p.decision_id
            assert read.address == p.address
    # the participant's row does not repeat them
    stored = await pool.fetchval(
        "SELECT checks FROM participants WHERE participant_id = $1", p.participant_id
    )
    assert stored == []


async def test_a_participant_decided_before_0004_keeps_its_checks(pool: asyncpg.Pool) -> None:
    p = person(None)
    async with pool.acquire() as conn, conn.transaction():
        await save_people(conn, [p])
        # as a row written before the migration: the checks in the row, no decision named
        await conn.execute(
            "UPDATE participants SET checks = $2::jsonb WHERE participant_id = $1",
            p.participant_id,
            CHECKS,
        )
    async with pool.acquire() as conn:
        read = (await people(conn, [p.participant_id], lock=False))[p.participant_id]
    assert read.checks == CHECKS and read.decision_id is None
