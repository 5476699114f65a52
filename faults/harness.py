"""The fault-suite harness: one supervised embedded stack, a paced agency, a fingerprint.

`FaultRun` starts the stack exactly as `perlinsos up` does (embedded broker and
PostgreSQL, the four services as processes, `Stack.supervise()` bringing back whatever
dies), with two things only a test needs: a TCP proxy between the services and
PostgreSQL that a case can cut, and optionally the fake Twilio as the SMS provider.

`drive(run, subs, rate, fault)` publishes the submissions at a fixed rate as agencies do,
runs the fault beside it, resubmits what has no answer after a while (agencies do; it is
idempotent by request id), and waits until the end state is reached. `fingerprint(run)`
reads that end state in the programme's terms (keyed by NIK and request id, never by the
generated participant, decision or message ids), so two runs of the same submissions
compare equal when nothing was lost and nothing happened twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer

from perlinsos_devruntime.cohort import Submission, generate_cohort
from perlinsos_devruntime.embedded import free_port, free_port_block
from perlinsos_devruntime.stack import Stack
from perlinsos_devruntime.tcpproxy import TcpProxy
from perlinsos_shared import intake_client
from perlinsos_shared.db_roles import SERVICES
from perlinsos_shared.settings import Settings

log = logging.getLogger("perlinsos.faults")

# An agency resubmits a request without an answer this long after it sent it, once no
# new answer has come for a while (answers still coming: registry is catching up).
RESUBMIT_AFTER_S = 45.0
RESUBMIT_WHEN_QUIET_S = 15.0
# The end state must hold this long (every service ready, nothing pending) to count:
# shorter once it equals the fault-free run's, longer when it merely stopped changing.
QUIET_AT_TARGET_S = 6.0
QUIET_S = 20.0


@dataclass
class FaultRun:
    """A supervised embedded stack for one case (`async with FaultRun(dir) as run:`)."""

    base: Path
    sms_provider: str = "file"  # "file" (the sink) or "twilio" (the fake Twilio)
    extra_env: dict[str, str] = field(default_factory=dict)
    stack: Stack = field(init=False)
    proxy: TcpProxy | None = field(default=None, init=False)
    twilio: Any = field(default=None, init=False)

    async def __aenter__(self) -> FaultRun:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        settings = Settings(
            PERLINSOS_STATE_DIR=self.base / "state",
            PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS=6000,
        )
        self.stack = Stack(
            settings,
            kafka_port=free_port_block(1),
            pg_port=free_port_block(1),
            http_port_base=0,
        )
        env = dict(self.extra_env)
        if self.sms_provider == "twilio":
            from perlinsos_devruntime.fake_twilio import FakeTwilio

            self.twilio = FakeTwilio(port=free_port()).start()
            env.update(self.twilio.env())
        try:
            self.stack.start_infrastructure()
            assert self.stack.postgres is not None
            self.proxy = TcpProxy(self.stack.postgres.port).start()
            self.stack.service_database_url = self.stack.database_url.replace(
                f":{self.stack.postgres.port}/", f":{self.proxy.port}/"
            )
            self.stack.start_services(SERVICES, timeout=180, extra_env=env)
            self.stack.supervise()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.stack.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if self.twilio is not None:
            self.twilio.stop()

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap_servers

    @property
    def database_url(self) -> str:
        """Direct to PostgreSQL (the harness reads through no proxy)."""
        return self.stack.database_url

    def settled_services(self) -> bool:
        """Every service running, ready, and not waiting for a restart."""
        services = list(self.stack.services)
        return bool(services) and all(
            s.ready and s.restart_at is None and s.process.poll() is None for s in services
        )


# ------------------------------------------------------------------------ the end state


@dataclass(frozen=True)
class Fingerprint:
    """What a run left behind, in terms that do not depend on timing or generated ids."""

    submissions: Counter[tuple[Any, ...]]  # (agency, request id, outcome, reasons)
    participants: Counter[tuple[Any, ...]]  # (nik, agency, request id, occupation)
    decisions: Counter[tuple[Any, ...]]  # (nik, outcome, line, cover start, cover end)
    ledger: Counter[tuple[Any, ...]]  # (nik, period, line, JKK, JKM)
    summaries: Counter[tuple[Any, ...]]  # (line, period, participants, JKK, JKM, adj.)
    sms: Counter[tuple[Any, ...]]  # (to, body) handed to the provider
    sms_repeated: int  # messages handed over more than once

    ASPECTS = ("submissions", "participants", "decisions", "ledger", "summaries", "sms")

    def counts(self) -> dict[str, int]:
        return {a: sum(getattr(self, a).values()) for a in self.ASPECTS}

    def differences(self, other: Fingerprint) -> dict[str, str]:
        """Per aspect: "" when equal, else what differs (counts only: no personal data)."""
        out = {}
        for aspect in self.ASPECTS:
            mine, theirs = getattr(self, aspect), getattr(other, aspect)
            extra, missing = mine - theirs, theirs - mine
            out[aspect] = (
                ""
                if not extra and not missing
                else f"{sum(extra.values())} extra, {sum(missing.values())} missing"
            )
        return out


_QUERIES = {
    # Poison is sent as agency POISON: whatever registry answers it is not the cohort's.
    "submissions": (
        "SELECT agency, request_id, outcome, reasons::text FROM registry.submissions"
        " WHERE agency <> 'POISON'"
    ),
    "participants": "SELECT nik, agency, request_id, occupation FROM registry.participants",
    "decisions": (
        "SELECT p.nik, d.outcome, d.funding_line, d.cover_start, d.cover_end"
        " FROM eligibility.decisions d JOIN registry.participants p USING (participant_id)"
    ),
    "ledger": (
        "SELECT p.nik, l.period, l.funding_line, l.jkk_idr, l.jkm_idr"
        " FROM premium.ledger l JOIN registry.participants p USING (participant_id)"
    ),
    "summaries": (
        "SELECT funding_line, period, participants, jkk_idr, jkm_idr, adjustments_idr"
        " FROM premium.summaries WHERE participants > 0 OR adjustments_idr <> 0"
    ),
}


def _sms_handed_over(run: FaultRun) -> tuple[Counter[tuple[Any, ...]], int]:
    if run.twilio is not None:
        taken = list(run.twilio.messages)
        sms = Counter((m["to"], m["body"]) for m in taken)
        return sms, sum(n - 1 for n in sms.values())
    path = run.stack.settings.sms_file
    lines = []
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
    per_id = Counter(x["id"] for x in lines)
    return Counter((x["to"], x["body"]) for x in lines), sum(n - 1 for n in per_id.values())


_T = TypeVar("_T")
_DB_AWAY = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def read_db(
    run: FaultRun, work: Callable[[asyncpg.Connection], Awaitable[_T]], patience_s: float = 600
) -> _T:
    """The harness's reads, tried again while PostgreSQL is away (a case may have killed
    it; `perlinsos up`'s supervisor brings it back)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn = await asyncpg.connect(run.database_url, timeout=10)
            try:
                return await work(conn)
            finally:
                with contextlib.suppress(*_DB_AWAY):
                    await conn.close()
        except _DB_AWAY:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def fingerprint(run: FaultRun) -> Fingerprint:
    async def rows(conn: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
        return {k: await conn.fetch(q, timeout=60) for k, q in _QUERIES.items()}

    found = await read_db(run, rows)
    sms, repeated = await asyncio.to_thread(_sms_handed_over, run)
    return Fingerprint(
        **{k: Counter(tuple(r) for r in v) for k, v in found.items()},
        sms=sms,
        sms_repeated=repeated,
    )


async def _pending(run: FaultRun) -> tuple[int, int]:
    """Work not finished yet (unpublished outbox rows, SMS not yet handed over), and
    submissions answered."""

    async def count(conn: asyncpg.Connection) -> tuple[int, int]:
        backlog = 0
        for service in SERVICES:
            backlog += await conn.fetchval(f"SELECT count(*) FROM {service}.outbox_pending")
        sms = await conn.fetchval(
            "SELECT count(*) FROM notify.messages WHERE status NOT IN ('accepted', 'failed',"
            " 'undeliverable')"
        )
        answered = await conn.fetchval(
            "SELECT count(*) FROM registry.submissions WHERE agency <> 'POISON'"
        )
        return int(backlog + sms), int(answered)

    return await read_db(run, count)


async def _answered(run: FaultRun) -> set[tuple[str, str]]:
    async def keys(conn: asyncpg.Connection) -> set[tuple[str, str]]:
        rows = await conn.fetch("SELECT agency, request_id FROM registry.submissions")
        return {(r["agency"], r["request_id"]) for r in rows}

    return await read_db(run, keys)


# ------------------------------------------------------------------------ the agency

Fault = Callable[["FaultRun", asyncio.Event], Coroutine[Any, Any, int]]


@dataclass
class Drive:
    """What happened while driving one run."""

    published: int = 0
    resubmitted: int = 0
    injections: int = 0
    seconds: float = 0.0
    end: Fingerprint | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _chunks(subs: Sequence[Submission], size: int) -> Iterator[Sequence[Submission]]:
    for i in range(0, len(subs), size):
        yield subs[i : i + size]


async def publish(bootstrap: str, subs: Sequence[Submission], timeout: float = 15) -> bool:
    """Publish as an agency does; False when the broker did not take them in time."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=10_000
    )
    try:
        await asyncio.wait_for(producer.start(), timeout)
        await asyncio.wait_for(
            intake_client.publish_submissions(
                producer, ((s.agency, s.data["nik"], s.data) for s in subs)
            ),
            timeout,
        )
        return True
    except Exception as exc:  # the broker is away: these get resubmitted later
        log.info("publish failed (%r): %d submissions wait for resubmission", exc, len(subs))
        return False
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


Key = tuple[str, str]


class Agency:
    """The sending side as a careful agency runs it: it resubmits, in the original order,
    every request without an answer after `RESUBMIT_AFTER_S`, and it keeps order per NIK:
    a submission for a NIK waits while an earlier one for that NIK has no answer.

    Order per NIK matters because of duplicates: of two submissions with one NIK the first
    is enrolled and the second refused (DUPLICATE_NIK). If the broker loses the first and
    the second goes out before the first is resubmitted, the second is enrolled instead:
    a faithful answer to what the broker saw, but not the fault-free run's."""

    def __init__(self, run: FaultRun, subs: Sequence[Submission], result: Drive) -> None:
        self.run = run
        self.result = result
        self.order = {(s.agency, s.request_id): i for i, s in enumerate(subs)}
        self.by_key = {(s.agency, s.request_id): s for s in subs}
        self.sent_at: dict[Key, float] = {}
        self.held: list[Submission] = []
        self.answers_seen, self.answers_changed = -1, time.monotonic()
        self.earlier: dict[Key, list[Key]] = {}  # a later submission -> earlier, same NIK
        first: dict[str, list[Key]] = {}
        for s in subs:
            key = (s.agency, s.request_id)
            before = first.setdefault(s.data["nik"], [])
            if before:
                self.earlier[key] = list(before)
            before.append(key)

    async def send(self, chunk: Sequence[Submission]) -> None:
        """Publish now what may go now; hold the rest (same NIK, earlier unanswered)."""
        self.held.extend(s for s in chunk if (s.agency, s.request_id) in self.earlier)
        await self._publish([s for s in chunk if (s.agency, s.request_id) not in self.earlier])
        self.result.published += len(chunk)
        await self.release_held()

    async def _publish(self, subs: Sequence[Submission]) -> bool:
        if not subs:
            return True
        ok = await publish(self.run.bootstrap, subs)
        now = time.monotonic()
        for s in subs:
            self.sent_at[(s.agency, s.request_id)] = now
        return ok

    async def release_held(self) -> None:
        if not self.held:
            return
        answered = await _answered(self.run)
        free = [
            s
            for s in self.held
            if all(k in answered for k in self.earlier[(s.agency, s.request_id)])
        ]
        if free:
            self.held = [s for s in self.held if s not in free]
            await self._publish(free)

    async def resubmit_unanswered(self) -> None:
        """Resubmit, in their original order, requests with no answer after a while."""
        now = time.monotonic()
        answered = await _answered(self.run)
        if len(answered) != self.answers_seen:
            self.answers_seen, self.answers_changed = len(answered), now
        stale = {k for k, at in self.sent_at.items() if now - at > RESUBMIT_AFTER_S}
        if stale and now - self.answers_changed > RESUBMIT_WHEN_QUIET_S:
            again = sorted(
                (self.by_key[k] for k in stale if k not in answered),
                key=lambda s: self.order[(s.agency, s.request_id)],
            )
            if again and await self._publish(again):
                self.result.resubmitted += len(again)
        await self.release_held()


async def drive(
    run: FaultRun,
    subs: Sequence[Submission],
    rate: float,
    fault: Fault | None = None,
    *,
    target: Fingerprint | None = None,
    timeout: float = 1200,
) -> Drive:
    """Publish `subs` at `rate` per second with `fault` running beside, then wait for the
    end state: `target` reached (and held), or without a target, everything answered,
    nothing pending, every service ready, and nothing changing for a while."""
    result = Drive()
    started = time.monotonic()
    agency = Agency(run, subs, result)
    publishing_done = asyncio.Event()
    fault_task = asyncio.create_task(fault(run, publishing_done)) if fault else None

    step = max(1, round(rate / 4))  # four chunks a second
    for n, chunk in enumerate(_chunks(subs, step)):
        due = started + n * step / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await agency.send(chunk)
    publishing_done.set()

    deadline = time.monotonic() + timeout
    last: Fingerprint | None = None
    quiet_since: float | None = None
    try:
        while True:
            if fault_task is not None and fault_task.done():
                result.injections = fault_task.result()
            pending, answered = await _pending(run)
            now = time.monotonic()
            if answered < len(subs):
                await agency.resubmit_unanswered()
            fp = await fingerprint(run)
            fault_over = fault_task is None or fault_task.done()
            settled = (
                fault_over and answered >= len(subs) and pending == 0 and run.settled_services()
            )
            at_target = target is not None and fp == target
            if not settled or not (at_target or fp == last):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= (QUIET_AT_TARGET_S if at_target else QUIET_S):
                result.end = fp
                break
            last = fp
            if now > deadline:
                result.end = fp
                result.notes.append(f"not settled after {timeout:.0f}s (pending {pending})")
                break
            await asyncio.sleep(1.0)
    finally:
        if fault_task is not None and not fault_task.done():
            fault_task.cancel()
            with contextlib.suppress(BaseException):
                await fault_task
        elif fault_task is not None:
            result.injections = fault_task.result()
    result.seconds = time.monotonic() - started
    result.restarts = run.stack.restarts()
    return result


# ------------------------------------------------------------------------ helpers for cases


def metrics_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=3) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def cohort(size: int, seed: int) -> list[Submission]:
    return generate_cohort(size=size, seed=seed, fault_rate=0.03)
