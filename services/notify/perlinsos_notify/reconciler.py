"""The reconciler loop: ambiguous sends are checked with the provider's message list.

A row left in `sending` may have been taken by the provider: its send got no answer, its
instance died (its liveness lock is gone and any request it had in flight has ended), or
its lease (counted from the hand-over) ran out. The reconciler takes such a row over and
asks the provider's list: found means accepted (never sent again), not found means it
may go again (within the retry horizon), no answer means ask again later, never resend
blindly. A message the list has neither confirmed nor denied for `unconfirmed_alert_s`
is surfaced: the `perlinsos.notify.sms.unconfirmed` gauge and `perlinsos notify
failures`; an operator who checked the provider's console can `perlinsos notify resend`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from perlinsos_notify.delivery import Accepted, RetryPolicy, Verdict, after_reconcile_miss
from perlinsos_notify.outcomes import Outcome, record
from perlinsos_notify.providers import SmsProvider
from perlinsos_notify.store import Claimed, claim_orphans, count_unconfirmed

log = logging.getLogger("perlinsos.notify")
meter = metrics.get_meter("perlinsos.notify")

RECONCILE_EVERY_S = 1.0
UNCONFIRMED_SAMPLE_S = 10.0

_reconciled = meter.create_counter(
    "perlinsos.notify.sms.reconciled",
    unit="{message}",
    description="ambiguous sends checked against the provider, by finding",
)
_unconfirmed: dict[str, int] = {}


def _observe_unconfirmed(_options: CallbackOptions) -> Iterable[Observation]:
    yield Observation(sum(_unconfirmed.values()))


meter.create_observable_gauge(
    "perlinsos.notify.sms.unconfirmed",
    callbacks=[_observe_unconfirmed],
    unit="{message}",
    description="sends the provider's list has neither confirmed nor denied for longer"
    " than SMS_UNCONFIRMED_ALERT_S (perlinsos notify failures lists them)",
)


class Reconciler:
    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        provider: SmsProvider,
        after_commit: Callable[[], Any],
        *,
        policy: RetryPolicy,
        instance_id: str,
        concurrency: int = 64,
        batch_size: int = 500,
        lease_s: float = 60.0,
        request_bound_s: float = 30.0,
        unconfirmed_alert_s: float = 900.0,
        rng: random.Random | None = None,
    ) -> None:
        self._pool_getter = pool_getter
        self._provider = provider
        self._after_commit = after_commit
        self._policy = policy
        self.instance_id = instance_id
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._batch_size = batch_size
        self._lease_s = lease_s
        self._request_bound_s = request_bound_s
        self.unconfirmed_alert_s = unconfirmed_alert_s
        self._rng = rng or random.Random()
        self.accepted = 0
        self.unconfirmed = 0

    async def run(self) -> None:
        """Errors escape to the runtime's supervisor, which starts the loop again."""
        sampled = 0.0
        while True:
            while await self.reconcile_once():
                pass
            if time.monotonic() - sampled >= UNCONFIRMED_SAMPLE_S:
                await self.sample_unconfirmed()
                sampled = time.monotonic()
            await asyncio.sleep(RECONCILE_EVERY_S)

    async def sample_unconfirmed(self) -> int:
        """The gauge's value; a warning when it changes to a count above zero."""
        before = self.unconfirmed
        self.unconfirmed = await count_unconfirmed(self._pool_getter(), self.unconfirmed_alert_s)
        _unconfirmed[self.instance_id] = self.unconfirmed
        if self.unconfirmed and self.unconfirmed != before:
            log.warning(
                "SMS the provider can neither confirm nor deny (see perlinsos notify failures)",
                extra={"count": self.unconfirmed, "after_s": self.unconfirmed_alert_s},
            )
        return self.unconfirmed

    async def reconcile_once(self) -> int:
        pool = self._pool_getter()
        claimed = await claim_orphans(
            pool, self.instance_id, self._batch_size, self._lease_s, self._request_bound_s
        )
        if not claimed:
            return 0
        found = await asyncio.gather(*(self._find(c) for c in claimed), return_exceptions=True)
        outcomes = []
        for c, f in zip(claimed, found, strict=True):
            if isinstance(f, asyncio.CancelledError):
                raise f
            if isinstance(f, BaseException):
                # the provider cannot say now: ask again later, never resend blindly
                delay = self._policy.delay(c.attempts, None, self._rng)
                error = f"message list: {type(f).__name__}"
                outcomes.append(Outcome(c, Verdict("reconcile", delay, error=error)))
                _reconciled.add(1, {"finding": "unknown"})
            elif f is not None:
                outcomes.append(Outcome(c, Verdict("accepted"), f, reconciled=True))
                _reconciled.add(1, {"finding": "taken"})
            else:
                verdict = after_reconcile_miss(c.age_s, self._policy)
                outcomes.append(Outcome(c, verdict, reconciled=True))
                _reconciled.add(1, {"finding": "not-taken"})
        log.info(
            "reconciled ambiguous sends",
            extra={
                "count": len(outcomes),
                "taken": sum(1 for o in outcomes if o.verdict.next == "accepted"),
            },
        )
        done = await record(pool, outcomes, self._provider.name, self._after_commit)
        self.accepted += done.accepted
        return len(claimed)

    async def _find(self, c: Claimed) -> Accepted | None:
        async with self._slots:
            return await self._provider.find_sent(c.outgoing, c.first_claimed_at)
