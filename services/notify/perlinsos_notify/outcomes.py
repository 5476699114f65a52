"""What became of a message, written once: its row, its history and its delivery event.

Shared by the Kafka handler (undeliverable numbers), the sender and the reconciler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from opentelemetry import metrics

from perlinsos_notify.delivery import Accepted, Verdict
from perlinsos_notify.store import Claimed, record_outcomes
from perlinsos_shared.envelope import make_event
from perlinsos_shared.events import SmsDelivery
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.topics import DELIVERIES

log = logging.getLogger("perlinsos.notify")
meter = metrics.get_meter("perlinsos.notify")
SOURCE = "perlinsos/notify"

outcomes_counter = meter.create_counter(
    "perlinsos.notify.sms", unit="{message}", description="SMS outcomes by status"
)

_STATUS_OF = {
    "accepted": "accepted",
    "retry": "pending",
    "failed": "failed",
    "reconcile": "sending",
}


def emit_delivery(outbox: Outbox, row: Any, *, status: str, provider: str, **outcome: Any) -> None:
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


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    verdict: Verdict
    accepted: Accepted | None = None
    reconciled: bool = False
    http_status: int | None = None


@dataclass
class Recorded:
    accepted: int = 0
    failed: int = 0
    superseded: int = 0


async def record(
    pool: asyncpg.Pool,
    outcomes: list[Outcome],
    provider: str,
    after_commit: Callable[[], Any],
) -> Recorded:
    """One transaction: every outcome (guarded by its attempt token), its history line, and
    a `notify.deliveries.v1` event for each message settled (accepted or failed)."""
    columns: dict[str, list[Any]] = {
        k: []
        for k in "ids tokens statuses pids pstatuses segments errors codes delays reconciled http".split()
    }
    for o in outcomes:
        columns["ids"].append(o.claimed.message_id)
        columns["tokens"].append(o.claimed.token)
        columns["statuses"].append(_STATUS_OF[o.verdict.next])
        columns["pids"].append(o.accepted.provider_message_id if o.accepted else None)
        columns["pstatuses"].append(o.accepted.status if o.accepted else None)
        columns["segments"].append(o.accepted.segments if o.accepted else None)
        columns["errors"].append(o.verdict.error)
        columns["codes"].append(o.verdict.code)
        columns["delays"].append(float(o.verdict.delay_s))
        columns["reconciled"].append(o.reconciled)
        columns["http"].append(o.http_status)
    done = Recorded()
    async with pool.acquire() as conn, conn.transaction():
        rows = await record_outcomes(conn, columns, provider)
        outbox = Outbox()
        for r in rows:
            if r["status"] not in ("accepted", "failed"):
                continue
            if r["status"] == "accepted":
                done.accepted += 1
            else:
                done.failed += 1
                log.error(
                    "SMS failed for good",
                    extra={
                        "message_id": r["message_id"],
                        "participant_id": r["participant_id"],
                        "code": r["error_code"],
                        "attempts": r["attempts"],
                    },
                )
            emit_delivery(
                outbox,
                r,
                status=r["status"],
                provider=provider,
                provider_message_id=r["provider_message_id"],
                segments=r["segments"],
                attempts=r["attempts"],
                error=r["last_error"] if r["status"] == "failed" else None,
            )
        await outbox.flush(conn)
    done.superseded = len(outcomes) - len(rows)
    if done.superseded:  # another instance took these over: it records them
        log.warning("outcomes superseded by a reconciler", extra={"count": done.superseded})
    if done.accepted:
        outcomes_counter.add(done.accepted, {"status": "accepted", "provider": provider})
    if done.failed:
        outcomes_counter.add(done.failed, {"status": "failed", "provider": provider})
    if done.accepted or done.failed:
        after_commit()
    return done
