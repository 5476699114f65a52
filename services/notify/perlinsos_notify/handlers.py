"""Notify: decisions in, one message row each; a sender loop hands them to the provider.

Never twice. A decision becomes one row keyed by its decision id (a redelivered decision
changes nothing). The sender never talks to the provider inside an open transaction:

1. claim: one statement moves due `pending` rows to `sending` with a fresh attempt token
   and this instance's id, and commits (FOR UPDATE SKIP LOCKED: two instances never claim
   the same row);
2. send: provider calls with no transaction open (bounded concurrency, a rate limit);
3. record: one transaction writes every outcome guarded by the attempt token, plus the
   `notify.deliveries.v1` events (outbox).

A row left in `sending` is ambiguous: the provider may have taken it. Its instance died
(its session advisory lock is gone), its claim is older than the lease, or the provider
did not answer (timeout, dropped connection). Such a row is reconciled first: the
provider's message list says whether it has the message; only if not is it sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace

from perlinsos_notify.delivery import (
    UNDELIVERABLE_TEXT,
    Accepted,
    RetryPolicy,
    SendResult,
    Verdict,
    after_reconcile_miss,
    judge,
    undeliverable_reason,
)
from perlinsos_notify.providers import Outgoing, SmsProvider
from perlinsos_notify.render import render
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import EligibilityDecided, SmsDelivery
from perlinsos_shared.masking import mask_nik, pseudonym
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.settings import Settings
from perlinsos_shared.telemetry import context_from_headers
from perlinsos_shared.topics import DELIVERIES

log = logging.getLogger("perlinsos.notify")
tracer = trace.get_tracer("perlinsos.notify")
meter = metrics.get_meter("perlinsos.notify")
SOURCE = "perlinsos/notify"
# First key of the two-key session advisory lock each live sender holds (second key:
# hashtext(instance id)). Another instance reads pg_locks to tell a dead owner's claims.
LIVENESS_LOCK_NS = 0x6E6F7479  # "noty"

_outcomes = meter.create_counter(
    "perlinsos.notify.sms", unit="{message}", description="SMS outcomes by status"
)
_retries = meter.create_counter(
    "perlinsos.notify.sms.retries", unit="{attempt}", description="provider answers retried"
)
_reconciled = meter.create_counter(
    "perlinsos.notify.sms.reconciled",
    unit="{message}",
    description="ambiguous sends checked against the provider, by finding",
)


# --- consuming decisions ---------------------------------------------------------------------


def message_id_for(decision_id: str) -> str:
    return f"sms-{decision_id}"


def make_handler(settings: Settings, wake: asyncio.Event) -> Any:
    async def handle_decisions(
        conn: asyncpg.Connection, messages: list[Incoming], outbox: Outbox
    ) -> None:
        cols: dict[str, list[Any]] = {
            k: []
            for k in (
                "message_id participant_id decision_id template phone body traceparent"
                " status code nik_hash nik_masked"
            ).split()
        }
        for m in messages:
            d = EligibilityDecided.model_validate(m.envelope.data)
            sms = render(d, settings.sms_brand, settings.sms_help_line)
            if sms is None:  # the template data sends nothing for this decision
                continue
            code = undeliverable_reason(d.phone_e164)
            cols["message_id"].append(message_id_for(d.decision_id))
            cols["participant_id"].append(d.participant_id)
            cols["decision_id"].append(d.decision_id)
            cols["template"].append(sms.template)
            cols["phone"].append(d.phone_e164)
            cols["body"].append(sms.text)
            cols["traceparent"].append(m.trace_headers.get("traceparent"))
            cols["status"].append("undeliverable" if code else "pending")
            cols["code"].append(code)
            cols["nik_hash"].append(pseudonym(d.nik) if d.nik else None)
            cols["nik_masked"].append(mask_nik(d.nik) if d.nik else None)
        inserted = await conn.fetch(
            "INSERT INTO messages (message_id, participant_id, decision_id, template,"
            " phone_e164, body, traceparent, status, error_code, nik_hash, nik_masked)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])"
            " ON CONFLICT DO NOTHING"
            " RETURNING participant_id, decision_id, template, status, error_code, traceparent",
            *cols.values(),
        )
        undeliverable = 0
        for r in inserted:
            if r["status"] != "undeliverable":
                continue
            undeliverable += 1
            _emit(
                outbox,
                r,
                status="undeliverable",
                provider=settings.sms_provider,
                attempts=0,
                error=UNDELIVERABLE_TEXT.get(r["error_code"], r["error_code"]),
            )
        if undeliverable:
            _outcomes.add(undeliverable, {"status": "undeliverable"})
        if len(inserted) > undeliverable:
            wake.set()

    return handle_decisions


def _emit(outbox: Outbox, row: Any, *, status: str, provider: str, **outcome: Any) -> None:
    """Publish (through the outbox) what became of the message in `row`, in its trace."""
    delivery = SmsDelivery(
        participant_id=row["participant_id"],
        decision_id=row["decision_id"],
        template=row["template"],
        status=status,  # type: ignore[arg-type]
        provider=provider,
        code=row["error_code"],
        **outcome,
    )
    traceparent = row["traceparent"]
    outbox.add(
        DELIVERIES.name,
        delivery.participant_id,
        make_event(SOURCE, delivery, subject=delivery.participant_id),
        {"traceparent": traceparent} if traceparent else None,
    )


# --- sending --------------------------------------------------------------------------------


class RateLimiter:
    """At most `per_s` acquisitions a second (evenly spaced); 0 means no limit."""

    def __init__(self, per_s: float) -> None:
        self._interval = 1.0 / per_s if per_s > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(frozen=True)
class Claimed:
    message_id: str
    participant_id: str
    decision_id: str
    template: str
    phone_e164: str
    body: str
    attempts: int
    token: uuid.UUID
    traceparent: str | None
    first_claimed_at: datetime

    @classmethod
    def of(cls, r: asyncpg.Record) -> Claimed:
        return cls(
            r["message_id"],
            r["participant_id"],
            r["decision_id"],
            r["template"],
            r["phone_e164"],
            r["body"],
            r["attempts"],
            r["attempt_token"],
            r["traceparent"],
            r["first_claimed_at"],
        )

    @property
    def outgoing(self) -> Outgoing:
        return Outgoing(self.message_id, self.phone_e164, self.body)


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    verdict: Verdict
    accepted: Accepted | None = None
    reconciled: bool = False
    http_status: int | None = None


_RETURNING = (
    " RETURNING m.message_id, m.participant_id, m.decision_id, m.template, m.phone_e164,"
    " m.body, m.attempts, m.attempt_token, m.traceparent, m.first_claimed_at"
)

CLAIM_SQL = (
    "WITH due AS (SELECT message_id FROM messages"
    " WHERE status = 'pending' AND next_attempt_at <= now()"
    " ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE messages m SET status = 'sending', claimed_by = $1,"
    " attempt_token = gen_random_uuid(), claimed_at = now(),"
    " first_claimed_at = coalesce(m.first_claimed_at, now()), attempts = m.attempts + 1,"
    " updated_at = now() FROM due WHERE m.message_id = due.message_id" + _RETURNING
)

# Rows in `sending` nobody is working on: no owner (the provider did not answer), an owner
# whose liveness lock is gone (killed), or a claim older than the lease.
ORPHANS_SQL = (
    "WITH live AS MATERIALIZED (SELECT objid FROM pg_locks"
    " WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $3::int::oid),"
    " orphan AS (SELECT message_id FROM messages"
    " WHERE status = 'sending' AND next_attempt_at <= now() AND ("
    " claimed_by IS NULL OR claimed_at < now() - make_interval(secs => $4)"
    " OR hashtext(claimed_by)::oid NOT IN (SELECT objid FROM live))"
    " ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE messages m SET claimed_by = $1, attempt_token = gen_random_uuid(),"
    " claimed_at = now(), updated_at = now() FROM orphan WHERE m.message_id = orphan.message_id"
    + _RETURNING
)

RECORD_SQL = """
UPDATE messages m SET
    status = u.status,
    provider = $12,
    provider_message_id = coalesce(u.provider_message_id, m.provider_message_id),
    provider_status = coalesce(u.provider_status, m.provider_status),
    segments = coalesce(u.segments, m.segments),
    last_error = u.error,
    error_code = u.code,
    next_attempt_at = now() + make_interval(secs => u.delay_s),
    claimed_by = NULL,
    reconciled = m.reconciled OR u.reconciled,
    accepted_at = CASE WHEN u.status = 'accepted' THEN now() ELSE m.accepted_at END,
    updated_at = now()
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::text[], $8::text[], $9::float8[], $10::bool[], $11::int[])
     AS u(message_id, token, status, provider_message_id, provider_status, segments,
          error, code, delay_s, reconciled, http_status)
WHERE m.message_id = u.message_id AND m.attempt_token = u.token AND m.status = 'sending'
RETURNING m.message_id, m.participant_id, m.decision_id, m.template, m.attempts, m.status,
          m.provider_message_id, m.segments, m.last_error, m.error_code, m.traceparent,
          u.http_status, u.reconciled
"""

_STATUS_OF = {
    "accepted": "accepted",
    "retry": "pending",
    "failed": "failed",
    "reconcile": "sending",
}


class Sender:
    """Hands due messages to the provider in batches and records what happened."""

    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        provider: SmsProvider,
        wake: asyncio.Event,
        after_commit: Callable[[], Any],
        *,
        policy: RetryPolicy,
        rate_limit_per_s: float = 0.0,
        concurrency: int = 64,
        batch_size: int = 500,
        lease_s: float = 60.0,
        instance_id: str | None = None,
        on_accepted: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._pool_getter = pool_getter
        self._provider = provider
        self._wake = wake
        self._after_commit = after_commit
        self._policy = policy
        self._limiter = RateLimiter(rate_limit_per_s)
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._batch_size = batch_size
        self._lease_s = lease_s
        self.instance_id = instance_id or f"notify-{uuid.uuid4().hex[:12]}"
        self._on_accepted = on_accepted
        self._rng = rng or random.Random()
        self._last_reconcile = 0.0
        self.accepted = 0
        self.failed = 0
        self.handed_over = 0  # provider calls made

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        pool_getter: Callable[[], asyncpg.Pool],
        provider: SmsProvider,
        wake: asyncio.Event,
        after_commit: Callable[[], Any],
        **kwargs: Any,
    ) -> Sender:
        return cls(
            pool_getter,
            provider,
            wake,
            after_commit,
            policy=RetryPolicy(
                settings.sms_max_attempts, settings.sms_backoff_base_s, settings.sms_backoff_max_s
            ),
            rate_limit_per_s=settings.sms_rate_limit_per_s,
            concurrency=settings.sms_concurrency,
            batch_size=settings.sms_batch_size,
            # a live request can never be older than the provider timeout (plus margin)
            lease_s=max(settings.sms_claim_lease_s, settings.sms_timeout_s * 2 + 5),
            **kwargs,
        )

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        pool = self._pool_getter()
        async with pool.acquire() as liveness:
            await liveness.execute(
                "SELECT pg_advisory_lock($1, hashtext($2))", LIVENESS_LOCK_NS, self.instance_id
            )
            try:
                await self._loop()
            finally:
                if not liveness.is_closed():
                    await liveness.execute("SELECT pg_advisory_unlock_all()")
                await self._provider.close()

    async def _loop(self) -> None:
        while True:
            try:
                worked = await self.step()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("sender round failed; retrying", extra={"error": repr(exc)[:300]})
                worked = 0
                await asyncio.sleep(1.0)
            if worked:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=await self._idle_for())
            except TimeoutError:
                pass
            self._wake.clear()

    async def _idle_for(self) -> float:
        """Seconds until the next message falls due (at most 0.5, at least 10 ms)."""
        pool = self._pool_getter()
        wait = await pool.fetchval(
            "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM messages"
            " WHERE status IN ('pending', 'sending')"
        )
        if wait is None:
            return 0.5
        return float(min(0.5, max(0.01, float(wait))))

    async def step(self) -> int:
        """One round: reconcile what is ambiguous (at most once a second), then send."""
        done = 0
        if time.monotonic() - self._last_reconcile >= 1.0:
            self._last_reconcile = time.monotonic()
            done += await self.reconcile_once()
        done += await self.send_once()
        return done

    # --- claim, send, record --------------------------------------------------------------

    async def send_once(self) -> int:
        pool = self._pool_getter()
        rows = await pool.fetch(CLAIM_SQL, self.instance_id, self._batch_size)
        if not rows:
            return 0
        claimed = [Claimed.of(r) for r in rows]
        results = await asyncio.gather(*(self._send(c) for c in claimed))
        outcomes = []
        for c, res in zip(claimed, results, strict=True):
            verdict = judge(res, c.attempts, self._policy, self._rng)
            http_status = getattr(res, "http_status", None)
            if verdict.next == "retry":
                _retries.add(1, {"provider": self._provider.name})
            outcomes.append(
                Outcome(
                    c,
                    verdict,
                    res if isinstance(res, Accepted) else None,
                    http_status=http_status,
                )
            )
        await self._record(outcomes)
        return len(claimed)

    async def _send(self, c: Claimed) -> SendResult:
        async with self._slots:
            await self._limiter.acquire()
            token = otel_context.attach(
                context_from_headers({"traceparent": c.traceparent} if c.traceparent else {})
            )
            try:
                with tracer.start_as_current_span(
                    "sms send",
                    kind=trace.SpanKind.CLIENT,
                    attributes={
                        "perlinsos.sms.provider": self._provider.name,
                        "perlinsos.sms.template": c.template,
                        "perlinsos.sms.attempt": c.attempts,
                    },
                ) as span:
                    self.handed_over += 1
                    result = await self._provider.send(c.outgoing)
                    span.set_attribute("perlinsos.sms.result", type(result).__name__)
            finally:
                otel_context.detach(token)
        if isinstance(result, Accepted) and self._on_accepted is not None:
            self._on_accepted()  # test hook: a crash right after the provider took it
        return result

    async def reconcile_once(self) -> int:
        pool = self._pool_getter()
        rows = await pool.fetch(
            ORPHANS_SQL, self.instance_id, self._batch_size, LIVENESS_LOCK_NS, self._lease_s
        )
        if not rows:
            return 0
        claimed = [Claimed.of(r) for r in rows]
        found = await asyncio.gather(*(self._find(c) for c in claimed), return_exceptions=True)
        outcomes = []
        for c, f in zip(claimed, found, strict=True):
            if isinstance(f, BaseException):
                # the provider cannot say now: ask again later, never resend blindly
                delay = self._policy.delay(c.attempts, None, self._rng)
                outcomes.append(Outcome(c, Verdict("reconcile", delay, error=repr(f)[:300])))
                _reconciled.add(1, {"finding": "unknown"})
            elif f is not None:
                outcomes.append(Outcome(c, Verdict("accepted"), f, reconciled=True))
                _reconciled.add(1, {"finding": "taken"})
            else:
                outcomes.append(
                    Outcome(c, after_reconcile_miss(c.attempts, self._policy), reconciled=True)
                )
                _reconciled.add(1, {"finding": "not-taken"})
        log.info(
            "reconciled ambiguous sends",
            extra={
                "count": len(outcomes),
                "taken": sum(1 for o in outcomes if o.verdict.next == "accepted"),
            },
        )
        await self._record(outcomes)
        return len(claimed)

    async def _find(self, c: Claimed) -> Accepted | None:
        async with self._slots:
            return await self._provider.find_sent(c.outgoing, c.first_claimed_at)

    async def _record(self, outcomes: list[Outcome]) -> None:
        ids, tokens, statuses, pids, pstatuses, segments = [], [], [], [], [], []
        errors, codes, delays, reconciled, http = [], [], [], [], []
        for o in outcomes:
            ids.append(o.claimed.message_id)
            tokens.append(o.claimed.token)
            statuses.append(_STATUS_OF[o.verdict.next])
            pids.append(o.accepted.provider_message_id if o.accepted else None)
            pstatuses.append(o.accepted.status if o.accepted else None)
            segments.append(o.accepted.segments if o.accepted else None)
            errors.append(o.verdict.error)
            codes.append(o.verdict.code)
            delays.append(float(o.verdict.delay_s))
            reconciled.append(o.reconciled)
            http.append(o.http_status)
        pool = self._pool_getter()
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                RECORD_SQL,
                ids,
                tokens,
                statuses,
                pids,
                pstatuses,
                segments,
                errors,
                codes,
                delays,
                reconciled,
                http,
                self._provider.name,
            )
            await conn.execute(
                "INSERT INTO message_attempts (message_id, attempt, outcome, http_status, error,"
                " reconciled) SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::int[],"
                " $5::text[], $6::bool[])",
                [r["message_id"] for r in rows],
                [r["attempts"] for r in rows],
                [r["status"] for r in rows],
                [r["http_status"] for r in rows],
                [r["last_error"] for r in rows],
                [r["reconciled"] for r in rows],
            )
            outbox = Outbox()
            accepted = failed = 0
            for r in rows:
                if r["status"] not in ("accepted", "failed"):
                    continue
                if r["status"] == "accepted":
                    accepted += 1
                else:
                    failed += 1
                    log.error(
                        "SMS failed for good",
                        extra={
                            "message_id": r["message_id"],
                            "participant_id": r["participant_id"],
                            "code": r["error_code"],
                            "attempts": r["attempts"],
                        },
                    )
                _emit(
                    outbox,
                    r,
                    status=r["status"],
                    provider=self._provider.name,
                    provider_message_id=r["provider_message_id"],
                    segments=r["segments"],
                    attempts=r["attempts"],
                    error=r["last_error"] if r["status"] == "failed" else None,
                )
            await outbox.flush(conn)
        lost = len(outcomes) - len(rows)
        if lost:  # another instance took these over (lease expired): it records them
            log.warning("outcomes superseded by a reconciler", extra={"count": lost})
        self.accepted += accepted
        self.failed += failed
        if accepted:
            _outcomes.add(accepted, {"status": "accepted", "provider": self._provider.name})
        if failed:
            _outcomes.add(failed, {"status": "failed", "provider": self._provider.name})
        if accepted or failed:
            self._after_commit()
