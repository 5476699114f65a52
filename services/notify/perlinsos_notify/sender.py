"""The sender loop: claim due messages, hand them to the provider, record what it said.

Never twice. The sender never talks to the provider inside an open transaction:

1. claim: one statement moves due `pending` rows to `sending` with a fresh attempt token
   and this instance as owner, and commits (FOR UPDATE SKIP LOCKED: two instances never
   claim the same row; a participant's later message waits for the earlier ones);
2. send: provider calls with no transaction open (bounded concurrency, a rate limit); the
   moment each message is handed over is written in small batches: its lease starts
   there, not at the claim, so a claim waiting in this instance's queue is never taken
   over while the instance lives;
3. record: one transaction writes every outcome guarded by the attempt token, plus the
   `notify.deliveries.v1` events (outbox).

The loop holds a session advisory lock (its liveness) for as long as it runs: other
instances read it to tell a dead owner's claims. When that lock's connection is lost the
sender stops handing messages over and its loop ends with an error; the runtime's
supervisor starts it again, and a (re)started sender first hands its leftover claims to
reconciliation (they may have been sent), then takes the lock again. Database errors
escape to the supervisor likewise.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from typing import Any

import asyncpg
from opentelemetry import metrics, trace

from perlinsos_notify.delivery import Accepted, RetryPolicy, SendResult, judge
from perlinsos_notify.outcomes import Outcome, record
from perlinsos_notify.providers import SmsProvider
from perlinsos_notify.reconciler import Reconciler
from perlinsos_notify.store import (
    LIVENESS_LOCK_NS,
    Claimed,
    claim_due,
    mark_handed,
    release_own_claims,
    seconds_until_due,
)
from perlinsos_shared.lean_spans import ConsumerSpans
from perlinsos_shared.settings import Settings

log = logging.getLogger("perlinsos.notify")
send_spans = ConsumerSpans("perlinsos.notify")
meter = metrics.get_meter("perlinsos.notify")

_retries = meter.create_counter(
    "perlinsos.notify.sms.retries", unit="{attempt}", description="provider answers retried"
)

HAND_OVER_MARK_S = 0.5  # how often the hand-over moments of a batch in flight are written
LIVENESS_CHECK_S = 5.0  # how often the liveness lock's connection is checked when idle
IDLE_MAX_S = 0.5  # the longest the sender waits without claiming when nothing woke it


class LivenessLost(ConnectionError):
    """The connection holding this sender's liveness lock is gone."""


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
        request_bound_s: float = 30.0,
        unconfirmed_alert_s: float = 900.0,
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
        self.instance_id = instance_id or f"notify-{uuid.uuid4().hex[:12]}"
        self._on_accepted = on_accepted
        self._rng = rng or random.Random()
        self._liveness: asyncpg.Connection | None = None
        self._in_flight = 0  # claimed messages not yet recorded
        self._due_at: float | None = None  # when the next pending message falls due, last read
        self.reconciler = Reconciler(
            pool_getter,
            provider,
            after_commit,
            policy=policy,
            instance_id=self.instance_id,
            concurrency=concurrency,
            batch_size=batch_size,
            lease_s=lease_s,
            request_bound_s=request_bound_s,
            unconfirmed_alert_s=unconfirmed_alert_s,
            rng=self._rng,
        )
        self.sent_accepted = 0  # accepted on this sender's own calls
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
        # no request can be in flight longer than the provider's own deadline (plus margin)
        request_bound_s = settings.sms_timeout_s * 1.5 + 1.0
        return cls(
            pool_getter,
            provider,
            wake,
            after_commit,
            policy=RetryPolicy(
                settings.sms_backoff_base_s,
                settings.sms_backoff_max_s,
                settings.sms_retry_horizon_s,
            ),
            rate_limit_per_s=settings.sms_rate_limit_per_s,
            concurrency=settings.sms_concurrency,
            batch_size=settings.sms_batch_size,
            lease_s=max(settings.sms_claim_lease_s, request_bound_s * 2),
            request_bound_s=request_bound_s,
            unconfirmed_alert_s=settings.sms_unconfirmed_alert_s,
            **kwargs,
        )

    @property
    def accepted(self) -> int:
        """Messages this instance settled as accepted: sent, or found by its reconciler."""
        return self.sent_accepted + self.reconciler.accepted

    async def close(self) -> None:
        """At shutdown (not between restarts of the loop): the provider's connections."""
        await self._provider.close()

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        pool = self._pool_getter()
        async with pool.acquire() as liveness:
            released = await release_own_claims(pool, self.instance_id)
            if released:
                log.warning(
                    "claims left by this instance's last run go to reconciliation",
                    extra={"count": released},
                )
            await liveness.execute(
                "SELECT pg_advisory_lock($1, hashtext($2))", LIVENESS_LOCK_NS, self.instance_id
            )
            self._liveness = liveness
            try:
                await self._loop(liveness)
            finally:
                self._liveness = None
                if not liveness.is_closed():
                    await liveness.execute("SELECT pg_advisory_unlock_all()")

    async def _loop(self, liveness: asyncpg.Connection) -> None:
        """Claim due messages as soon as they are committed (the wake) and send them, with
        earlier claims still in flight: each claim is a round of its own (send, then record),
        so a message never waits for the slowest request of a round it was not in. At most
        `batch_size` claimed messages are in flight; a failed round ends the loop once the
        others have finished."""
        pool = self._pool_getter()
        rounds: set[asyncio.Task[int]] = set()
        checked = time.monotonic()
        try:
            while True:
                if liveness.is_closed():
                    raise LivenessLost("the liveness lock's connection is closed")
                if time.monotonic() - checked >= LIVENESS_CHECK_S:
                    await asyncio.wait_for(liveness.fetchval("SELECT 1"), timeout=LIVENESS_CHECK_S)
                    checked = time.monotonic()
                for finished in [r for r in rounds if r.done()]:
                    rounds.discard(finished)
                    finished.result()  # a round's error ends the loop
                room = self._batch_size - self._in_flight
                if room > 0:
                    claimed = await claim_due(pool, self.instance_id, room)
                    if claimed:
                        rounds.add(asyncio.create_task(self._round(pool, claimed)))
                        if len(claimed) == room:
                            continue  # there may be more due
                        # Fewer than asked for: everything due was claimed. More falls due
                        # when messages commit (the wake), when a round records (a later
                        # message of the same participant, a retry) or at the next due
                        # time known: no claim and query of the next due time to find that
                        # out again (two statements a round at steady rates).
                        idle_s = self._until_known_due()
                    else:
                        idle_s = await self._idle_for()
                else:
                    idle_s = LIVENESS_CHECK_S
                await self._wait(rounds, idle_s)
        except asyncio.CancelledError:  # stopping: what is in flight is reconciled later
            for r in rounds:
                r.cancel()
            await asyncio.gather(*rounds, return_exceptions=True)
            raise
        except Exception:  # the other rounds record what they handed over first
            await asyncio.gather(*rounds, return_exceptions=True)
            raise

    async def _wait(self, rounds: set[asyncio.Task[int]], timeout: float) -> None:
        """Until woken (new messages committed), a round finished, or `timeout`."""
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({woken, *rounds}, timeout=timeout, return_when=FIRST_COMPLETED)
        finally:
            woken.cancel()
        self._wake.clear()

    async def _idle_for(self) -> float:
        """Seconds until the next message falls due (at most 0.5, at least 10 ms)."""
        wait = await seconds_until_due(self._pool_getter())
        self._due_at = None if wait is None else time.monotonic() + wait
        if wait is None:
            return IDLE_MAX_S
        return float(min(IDLE_MAX_S, max(0.01, wait)))

    def _until_known_due(self) -> float:
        """`_idle_for` from what it last read, without asking again."""
        if self._due_at is None:
            return IDLE_MAX_S
        return float(min(IDLE_MAX_S, max(0.01, self._due_at - time.monotonic())))

    # --- claim, send, record --------------------------------------------------------------

    async def send_once(self) -> int:
        """Claim what is due and send it as one round; how many were claimed."""
        pool = self._pool_getter()
        claimed = await claim_due(pool, self.instance_id, self._batch_size)
        if not claimed:
            return 0
        return await self._round(pool, claimed)

    async def _round(self, pool: asyncpg.Pool, claimed: list[Claimed]) -> int:
        """Hand `claimed` to the provider, then record every outcome in one transaction."""
        self._in_flight += len(claimed)
        try:
            return await self._send_and_record(pool, claimed)
        finally:
            self._in_flight -= len(claimed)

    async def _send_and_record(self, pool: asyncpg.Pool, claimed: list[Claimed]) -> int:
        handed: list[tuple[str, uuid.UUID]] = []
        sends = asyncio.ensure_future(asyncio.gather(*(self._send(c, handed) for c in claimed)))
        try:
            while not sends.done():
                await asyncio.wait({sends}, timeout=HAND_OVER_MARK_S)
                # every send answered: the outcomes are written next, so the moments of
                # hand-over are not (a statement per round saved at steady rates, where
                # most rounds are answered within HAND_OVER_MARK_S)
                if handed and not sends.done():
                    batch, handed[:] = list(handed), []
                    await self._mark(pool, batch)
            results = sends.result()
        finally:
            if not sends.done():
                sends.cancel()
                await asyncio.gather(sends, return_exceptions=True)
        outcomes = []
        for c, res in zip(claimed, results, strict=True):
            if res is None:  # never handed over (liveness lost): reconciled after restart
                continue
            verdict = judge(res, c.attempts, c.age_s, self._policy, self._rng)
            if verdict.next == "retry":
                _retries.add(1, {"provider": self._provider.name})
            outcomes.append(
                Outcome(
                    c,
                    verdict,
                    res if isinstance(res, Accepted) else None,
                    http_status=getattr(res, "http_status", None),
                )
            )
        if outcomes:
            done = await record(pool, outcomes, self._provider.name, self._after_commit)
            self.sent_accepted += done.accepted
            self.failed += done.failed
        if len(outcomes) < len(claimed):
            raise LivenessLost("stopped handing messages over: the liveness lock is gone")
        return len(claimed)

    async def _mark(self, pool: asyncpg.Pool, batch: list[tuple[str, uuid.UUID]]) -> None:
        """Best effort: a hand-over not written leaves the claim looking queued, which only
        delays a takeover while this instance lives (a dead one's claims are taken anyway)."""
        try:
            await mark_handed(pool, batch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("hand-over moments not written", extra={"error": type(exc).__name__})

    async def _send(self, c: Claimed, handed: list[tuple[str, uuid.UUID]]) -> SendResult | None:
        async with self._slots:
            await self._limiter.acquire()
            if self._liveness is not None and self._liveness.is_closed():
                return None
            # the span the SDK's tracer would make under the message's stored trace context,
            # on the short path (`ConsumerSpans`); current while the provider is called, so
            # that its HTTP client's span is a child of it
            span = send_spans.start(
                "sms send",
                {"traceparent": c.traceparent} if c.traceparent else {},
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "perlinsos.sms.provider": self._provider.name,
                    "perlinsos.sms.template": c.template,
                    "perlinsos.sms.attempt": c.attempts,
                },
            )
            with trace.use_span(span, end_on_exit=True):
                self.handed_over += 1
                handed.append((c.message_id, c.token))
                result = await self._provider.send(c.outgoing)
                span.set_attribute("perlinsos.sms.result", type(result).__name__)
        if isinstance(result, Accepted) and self._on_accepted is not None:
            self._on_accepted()  # test hook: a crash right after the provider took it
        return result

    async def reconcile_once(self) -> int:
        return await self.reconciler.reconcile_once()
