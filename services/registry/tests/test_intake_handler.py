"""Registry's handler, one set of cases against two stores: in memory and PostgreSQL.

The same bodies run on `MemoryIntakeStore` (no I/O) and on `PgIntakeStore` over a real
PostgreSQL (marker `db`, no broker): what each store holds afterwards, seen through one
view, and what the handler put in the outbox. Flows over Kafka stay in
`test_intake_flow.py`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from perlinsos_registry.agencies import AgencyPolicy
from perlinsos_registry.handlers import IN_REPLY_TO, apply_intake
from perlinsos_registry.intake import IntakePlan, KnownState
from perlinsos_registry.store import IntakeStore, MemoryIntakeStore, PgIntakeStore
from perlinsos_registry.testing import enrolment, exit_of, nik
from perlinsos_shared.clock import BATAM_TZ
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.db import create_pool, open_service_db
from perlinsos_shared.envelope import RawEnvelope
from perlinsos_shared.events import EnrolmentSubmitted, ExitReported
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import (
    INTAKE,
    INTAKE_REJECTED,
    PARTICIPANTS,
    agency_replies_topic,
)

POLICY = AgencyPolicy.load()
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=BATAM_TZ)
TODAY = NOW.date()
ENROL = EnrolmentSubmitted.event_type
EXIT = ExitReported.event_type


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


_offsets = itertools.count()


def incoming(event_type: str, data: Any, source: str | None = None) -> Incoming:
    agency = data.get("agency") if isinstance(data, dict) else None
    env = RawEnvelope(
        specversion="1.0",
        id=f"ev-{next(_offsets)}",
        source=source or f"agency/{agency}",
        type=event_type,
        data=data,
    )
    record = FakeRecord(INTAKE.name, 0, next(_offsets), None, env.model_dump_json().encode(), [])
    return Incoming(envelope=env, key=None, headers={}, record=record)


@dataclass
class View:
    """What a store holds, the same way for both."""

    submissions: dict[tuple[str, str], tuple[str, str, list[str], str | None]]
    participants: dict[
        str, tuple[str, int, Any, str]
    ]  # nik -> (pid, membership, exited_on, agency)
    memberships: dict[tuple[str, int], tuple[str, str, Any]]  # -> (agency, request_id, exited_on)
    audit: list[tuple[str, str, str]]  # (participant_id, request_id, action)


Race = Callable[[], Awaitable[None]]


class Backend:
    async def run(
        self, messages: Sequence[Incoming], *, racing: Race | None = None
    ) -> tuple[IntakePlan, Outbox]:
        raise NotImplementedError

    async def view(self) -> View:
        raise NotImplementedError


class _Racing:
    """A store where another writer commits right after the first load."""

    def __init__(self, inner: IntakeStore, race: Race) -> None:
        self.inner, self.race, self.loads = inner, race, 0

    async def load(self, pairs: Any, niks: Any) -> KnownState:
        known = await self.inner.load(pairs, niks)
        self.loads += 1
        if self.loads == 1:
            await self.race()
        return known

    async def write(self, plan: IntakePlan) -> bool:
        return await self.inner.write(plan)


_ids = itertools.count(1)


def _new_id() -> str:
    return f"P{next(_ids)}"


class Memory(Backend):
    def __init__(self) -> None:
        self.mem = MemoryIntakeStore()

    async def run(
        self, messages: Sequence[Incoming], *, racing: Race | None = None
    ) -> tuple[IntakePlan, Outbox]:
        outbox = Outbox()
        store: IntakeStore = self.mem if racing is None else _Racing(self.mem, racing)
        plan = await apply_intake(store, messages, outbox, POLICY, now=NOW, new_id=_new_id)
        return plan, outbox

    async def view(self) -> View:
        m = self.mem
        return View(
            {k: (v["kind"], v["outcome"], [r["code"] for r in v["reasons"]], v["participant_id"]) for k, v in m.submissions.items()},
            {k: (v["participant_id"], v["membership"], v["exited_on"], v["agency"]) for k, v in m.participants.items()},
            {k: (v["agency"], v["request_id"], v["exited_on"]) for k, v in m.memberships.items()},
            [(a["participant_id"], a["request_id"], a["action"]) for a in m.audit_log],
        )  # fmt: skip


class Postgres(Backend):
    """Each call opens its own pool (the fixture is synchronous: the database fixture runs
    its own event loop), as a service instance would."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.migrated = False

    @asynccontextmanager
    async def pool(self) -> AsyncIterator[asyncpg.Pool]:
        if not self.migrated:
            await (await open_service_db(self.url, "registry", pool_size=1)).close()
            self.migrated = True
        pool = await create_pool(self.url, "registry", max_size=2)
        try:
            yield pool
        finally:
            await pool.close()

    async def run(
        self, messages: Sequence[Incoming], *, racing: Race | None = None
    ) -> tuple[IntakePlan, Outbox]:
        outbox = Outbox()
        async with self.pool() as pool, pool.acquire() as conn, conn.transaction():
            pg: IntakeStore = PgIntakeStore(conn)
            store = pg if racing is None else _Racing(pg, racing)
            plan = await apply_intake(store, messages, outbox, POLICY, now=NOW, new_id=_new_id)
            await outbox.flush(conn)
        return plan, outbox

    async def view(self) -> View:
        async with self.pool() as pool, pool.acquire() as c:
            subs = await c.fetch("SELECT * FROM submissions")
            parts = await c.fetch("SELECT * FROM participants")
            mems = await c.fetch("SELECT * FROM memberships")
            audit = await c.fetch("SELECT * FROM audit_log ORDER BY id")
        return View(
            {(r["agency"], r["request_id"]): (r["kind"], r["outcome"], [x["code"] for x in r["reasons"]], r["participant_id"]) for r in subs},
            {r["nik"]: (r["participant_id"], r["membership"], r["exited_on"], r["agency"]) for r in parts},
            {(r["participant_id"], r["membership"]): (r["agency"], r["request_id"], r["exited_on"]) for r in mems},
            [(r["participant_id"], r["request_id"], r["action"]) for r in audit],
        )  # fmt: skip


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.db)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Memory()
    return Postgres(request.getfixturevalue("database_url"))


def _events(outbox: Outbox) -> list[tuple[str, dict[str, Any]]]:
    return [
        (t, json.loads(v)) if t != INTAKE.dlq else (t, {})
        for t, v in zip(outbox.topics, outbox.values, strict=True)
    ]


async def test_enrolment_refusal_and_dead_letter_land_in_store_and_outbox(backend: Backend) -> None:
    msgs = [
        incoming(ENROL, enrolment(1)),
        incoming(ENROL, enrolment(2, sex="P")),
        incoming(ENROL, {"nik": "1"}, source="unknown-system"),
    ]
    _, outbox = await backend.run(msgs)
    v = await backend.view()
    pid = v.participants[nik(1)][0]
    assert v.submissions == {
        ("DISHUB", "DISHUB-1"): ("enrolment", "accepted", [], pid),
        ("DISHUB", "DISHUB-2"): ("enrolment", "rejected", ["SEX_MISMATCH"], None),
    }
    assert v.participants == {nik(1): (pid, 1, None, "DISHUB")}
    assert v.memberships == {(pid, 1): ("DISHUB", "DISHUB-1", None)}
    assert v.audit == [(pid, "DISHUB-1", "enrolled")]
    events = _events(outbox)
    dishub_own = agency_replies_topic("DISHUB")  # the reply again, where only DISHUB reads
    assert [t for t, _ in events] == [
        PARTICIPANTS.name,
        INTAKE_REJECTED.name,
        dishub_own,
        INTAKE.dlq,
    ]
    assert events[0][1]["data"]["participant_id"] == pid
    assert events[1][1]["data"]["nik_masked"] == "217110********02"
    assert events[2][1] == events[1][1]
    assert [h[IN_REPLY_TO] for h in outbox.headers[:3]] == [msgs[0].id, msgs[1].id, msgs[1].id]
    assert outbox.headers[3]["x-dlq-error"].startswith("SCHEMA_INVALID")


async def test_a_resubmission_in_a_later_batch_changes_nothing(backend: Backend) -> None:
    await backend.run([incoming(ENROL, enrolment(1)), incoming(ENROL, enrolment(2, sex="P"))])
    before = await backend.view()
    _, outbox = await backend.run(
        [incoming(ENROL, enrolment(1)), incoming(ENROL, enrolment(2, sex="P"))]
    )
    assert await backend.view() == before
    assert len(outbox) == 0


async def test_duplicate_nik_across_batches_names_the_first_agency(backend: Backend) -> None:
    await backend.run([incoming(ENROL, enrolment(1, agency="DISHUB"))])
    _, outbox = await backend.run([incoming(ENROL, enrolment(1, agency="DISNAKER"))])
    v = await backend.view()
    assert v.submissions[("DISNAKER", "DISNAKER-1")][1:3] == ("rejected", ["DUPLICATE_NIK"])
    (event,) = [e for t, e in _events(outbox) if t == INTAKE_REJECTED.name]
    assert "DISHUB" in event["data"]["reasons"][0]["message"]


async def test_the_duplicate_nik_race_is_lost_cleanly_and_replanned(backend: Backend) -> None:
    async def other_instance_enrols_first() -> None:
        await backend.run([incoming(ENROL, enrolment(1, agency="DISNAKER"))])

    plan, outbox = await backend.run(
        [incoming(ENROL, enrolment(1, agency="DISHUB"))], racing=other_instance_enrols_first
    )
    v = await backend.view()
    assert [p[3] for p in v.participants.values()] == ["DISNAKER"]
    assert v.submissions[("DISHUB", "DISHUB-1")][1:3] == ("rejected", ["DUPLICATE_NIK"])
    assert len(v.memberships) == 1 and [a[2] for a in v.audit] == ["enrolled"]
    assert [t for t, _ in _events(outbox)] == [
        INTAKE_REJECTED.name,
        agency_replies_topic("DISHUB"),
    ]
    assert plan.enrolments == []


async def test_exit_then_re_enrolment_then_exit_keeps_both_memberships(backend: Backend) -> None:
    back_then = TODAY - timedelta(days=40)
    await backend.run([incoming(ENROL, enrolment(1))])
    # the first membership ended 40 days ago: written as it would have been then
    v = await backend.view()
    pid = v.participants[nik(1)][0]
    await _backdate(backend, pid, back_then)
    await backend.run([incoming(EXIT, exit_of(1, rid="X-1", on=back_then))])
    _, outbox = await backend.run([incoming(ENROL, enrolment(1, agency="DISNAKER", rid="BACK-1"))])
    enrolled = [e for t, e in _events(outbox) if t == PARTICIPANTS.name]
    assert [(e["data"]["participant_id"], e["data"]["membership"]) for e in enrolled] == [(pid, 2)]
    await backend.run([incoming(EXIT, exit_of(1, TODAY, agency="DISNAKER", rid="X-2"))])
    v = await backend.view()
    assert v.participants == {nik(1): (pid, 2, TODAY, "DISNAKER")}
    assert v.memberships == {
        (pid, 1): ("DISHUB", "DISHUB-1", back_then),
        (pid, 2): ("DISNAKER", "BACK-1", TODAY),
    }
    assert [a[1:] for a in v.audit] == [
        ("DISHUB-1", "enrolled"), ("X-1", "exited"), ("BACK-1", "re-enrolled"), ("X-2", "exited"),
    ]  # fmt: skip


async def _backdate(backend: Backend, pid: str, day: date) -> None:
    """Move the first membership's enrolment back (the stores hold what happened then)."""
    at = datetime(day.year, day.month, day.day, 9, tzinfo=BATAM_TZ)
    if isinstance(backend, Memory):
        for p in backend.mem.participants.values():
            if p["participant_id"] == pid:
                p["enrolled_at"] = at
        return
    assert isinstance(backend, Postgres)
    async with backend.pool() as pool, pool.acquire() as c:
        await c.execute(
            "UPDATE participants SET enrolled_at = $2 WHERE participant_id = $1", pid, at
        )
        await c.execute(
            "UPDATE memberships SET enrolled_at = $2 WHERE participant_id = $1", pid, at
        )
