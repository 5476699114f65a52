"""Notify's SQL: message rows, their claims and outcomes, and what operators read and do.

The rules (what an answer means, when to retry) are in delivery.py; the loops that use
this are sender.py and reconciler.py; the Kafka handler is handlers.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from perlinsos_notify.providers import Outgoing
from perlinsos_shared.sql import insert_rows

# First key of the two-key session advisory lock each live sender holds (second key:
# hashtext(instance id)). Another instance reads pg_locks to tell a dead owner's claims.
LIVENESS_LOCK_NS = 0x6E6F7479  # "noty"

# --- decisions in ----------------------------------------------------------------------------

MESSAGE_COLUMNS = (
    ("message_id", "text"),
    ("participant_id", "text"),
    ("decision_id", "text"),
    ("template", "text"),
    ("phone_e164", "text"),
    ("body", "text"),
    ("traceparent", "text"),
    ("status", "text"),
    ("error_code", "text"),
    ("nik_hash", "text"),
    ("nik_masked", "text"),
)


async def insert_messages(conn: asyncpg.Connection, rows: Sequence[Sequence[Any]]) -> list[Any]:
    """New message rows, tuples in `MESSAGE_COLUMNS` order (a decision seen before adds
    nothing); the rows inserted. Inserted in the order consumed: `seq` (decision order per
    participant) follows it."""
    return await insert_rows(
        conn,
        "messages",
        MESSAGE_COLUMNS,
        rows,
        then="ON CONFLICT DO NOTHING"
        " RETURNING participant_id, decision_id, template, status, error_code, traceparent",
        in_order=True,
    )


# --- claims ------------------------------------------------------------------------------------


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
    first_claimed_at: Any  # datetime
    age_s: float  # since the first try: the retry horizon counts from it

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
            float(r["age_s"] or 0.0),
        )

    @property
    def outgoing(self) -> Outgoing:
        return Outgoing(self.message_id, self.phone_e164, self.body)


_RETURNING = (
    " RETURNING m.message_id, m.participant_id, m.decision_id, m.template, m.phone_e164,"
    " m.body, m.attempts, m.attempt_token, m.traceparent, m.first_claimed_at,"
    " extract(epoch FROM now() - m.first_claimed_at)::float8 AS age_s"
)

# Due `pending` rows whose participant has no earlier message still open (decision order),
# moved to `sending` with a fresh attempt token, this instance as owner and no lease yet:
# the lease starts when the message is handed to the provider (`mark_handed`).
# The earlier-message check is a per-row subplan (`OFFSET 0` keeps PostgreSQL from turning
# it into an anti-join): rows are read in claim order (index `messages_claimable`) and
# checked one by one until the limit, so a claim costs its batch, not the whole backlog;
# as an anti-join, on statistics not yet updated after a burst, every pending row was
# joined and sorted on every claim.
# The rows claimed are then updated by primary key (`= ANY(ARRAY(...))`): as a join
# (`FROM due`), a generic plan, which cannot know `$2`, expects a tenth of the backlog
# and joins it by reading the whole table (at 500,000 rows: 460 ms instead of 30).
CLAIM_SQL = (
    "WITH due AS (SELECT message_id FROM messages m"
    " WHERE status = 'pending' AND next_attempt_at <= now()"
    " AND NOT EXISTS (SELECT 1 FROM messages e WHERE e.participant_id = m.participant_id"
    " AND e.seq < m.seq AND e.status IN ('pending', 'sending') OFFSET 0)"
    " ORDER BY next_attempt_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE messages m SET status = 'sending', claimed_by = $1,"
    " attempt_token = gen_random_uuid(), claimed_at = now(), lease_from = NULL,"
    " first_claimed_at = coalesce(m.first_claimed_at, now()), attempts = m.attempts + 1,"
    " updated_at = now()"
    " WHERE m.message_id = ANY(ARRAY(SELECT message_id FROM due))" + _RETURNING
)

# Rows in `sending` nobody is working on, taken over to be checked with the provider:
# - no owner: the provider gave no answer and the owner recorded that;
# - an owner whose liveness lock is gone (killed, or its lock connection lost), once
#   any request it could still have in flight has ended ($5 seconds after its last claim
#   or hand-over);
# - a live owner that handed the message over longer than the lease ago ($4) and never
#   recorded an answer. A live owner's claim still in its queue is left alone.
# `sending` rows are read through their own index (`messages_sending`): a batch in flight,
# not the whole backlog of due messages. Updated by primary key, as the claim.
ORPHANS_SQL = (
    "WITH live AS MATERIALIZED (SELECT objid FROM pg_locks"
    " WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $3::int::oid),"
    " orphan AS (SELECT message_id FROM messages"
    " WHERE status = 'sending' AND next_attempt_at <= now() AND ("
    " claimed_by IS NULL"
    " OR (hashtext(claimed_by)::oid NOT IN (SELECT objid FROM live)"
    " AND coalesce(lease_from, claimed_at) < now() - make_interval(secs => $5))"
    " OR lease_from < now() - make_interval(secs => $4))"
    " ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE messages m SET claimed_by = $1, attempt_token = gen_random_uuid(),"
    " claimed_at = now(), lease_from = now(),"
    " unconfirmed_since = coalesce(m.unconfirmed_since, now()), updated_at = now()"
    " WHERE m.message_id = ANY(ARRAY(SELECT message_id FROM orphan))" + _RETURNING
)


async def claim_due(pool: asyncpg.Pool, instance_id: str, limit: int) -> list[Claimed]:
    return [Claimed.of(r) for r in await pool.fetch(CLAIM_SQL, instance_id, limit)]


async def claim_orphans(
    pool: asyncpg.Pool, instance_id: str, limit: int, lease_s: float, request_bound_s: float
) -> list[Claimed]:
    rows = await pool.fetch(
        ORPHANS_SQL, instance_id, limit, LIVENESS_LOCK_NS, lease_s, request_bound_s
    )
    return [Claimed.of(r) for r in rows]


async def mark_handed(pool: asyncpg.Pool, handed: Sequence[tuple[str, uuid.UUID]]) -> None:
    """Start the lease of messages just handed to the provider (guarded by their token)."""
    if not handed:
        return
    await pool.execute(
        "UPDATE messages m SET lease_from = now() FROM unnest($1::text[], $2::uuid[])"
        " AS h(id, token) WHERE m.message_id = h.id AND m.attempt_token = h.token"
        " AND m.status = 'sending' AND m.lease_from IS NULL",
        [h[0] for h in handed],
        [h[1] for h in handed],
    )


async def release_own_claims(pool: asyncpg.Pool, instance_id: str) -> int:
    """At (re)start: claims this instance left behind may have been handed over; they are
    checked with the provider like any unanswered send, never sent blindly."""
    status = await pool.execute(
        "UPDATE messages SET claimed_by = NULL, lease_from = NULL, updated_at = now(),"
        " unconfirmed_since = coalesce(unconfirmed_since, now())"
        " WHERE status = 'sending' AND claimed_by = $1",
        instance_id,
    )
    return int(status.split()[-1])


async def seconds_until_due(pool: asyncpg.Pool) -> float | None:
    """Until the next `pending` message falls due (the sender's claims; rows in `sending`
    are in flight or the reconciler's)."""
    wait = await pool.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM messages"
        " WHERE status = 'pending'"
    )
    return None if wait is None else float(wait)


async def count_unconfirmed(conn: asyncpg.Connection | asyncpg.Pool, alert_s: float) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM messages WHERE status = 'sending'"
            " AND unconfirmed_since < now() - make_interval(secs => $1)",
            alert_s,
        )
        or 0
    )


# --- outcomes ----------------------------------------------------------------------------------

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
    lease_from = NULL,
    unconfirmed_since = CASE WHEN u.status = 'sending'
                             THEN coalesce(m.unconfirmed_since, now()) END,
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


ATTEMPT_COLUMNS = (
    ("message_id", "text"),
    ("attempt", "int"),
    ("outcome", "text"),
    ("http_status", "int"),
    ("error", "text"),
    ("reconciled", "bool"),
)


async def record_outcomes(
    conn: asyncpg.Connection, columns: dict[str, list[Any]], provider: str
) -> list[Any]:
    """Write outcomes guarded by their attempt token (a superseded one changes nothing) and
    each into the message's history; the rows that changed."""
    rows: list[asyncpg.Record] = await conn.fetch(
        RECORD_SQL,
        columns["ids"],
        columns["tokens"],
        columns["statuses"],
        columns["pids"],
        columns["pstatuses"],
        columns["segments"],
        columns["errors"],
        columns["codes"],
        columns["delays"],
        columns["reconciled"],
        columns["http"],
        provider,
    )
    await insert_rows(
        conn,
        "message_attempts",
        ATTEMPT_COLUMNS,
        [
            (r["message_id"], r["attempts"], r["status"], r["http_status"], r["last_error"],
             r["reconciled"])
            for r in rows
        ],
    )  # fmt: skip
    return rows


# --- operators ---------------------------------------------------------------------------------

MESSAGES_SQL = (
    "SELECT message_id, participant_id, decision_id, template, phone_e164, status, attempts,"
    " provider, provider_message_id, provider_status, segments, error_code, last_error,"
    " reconciled, nik_masked, created_at, accepted_at, updated_at, unconfirmed_since"
    " FROM messages"
)


async def messages_of(
    pool: asyncpg.Pool, *, nik_hashes: list[str] | None = None, participant_id: str | None = None
) -> list[dict[str, Any]]:
    """One participant's messages, in decision order, with their history: by the NIK's
    pseudonyms (current key and previous ones) or by participant id."""
    if nik_hashes is not None:
        rows = await pool.fetch(
            MESSAGES_SQL + " WHERE nik_hash = ANY($1::text[]) ORDER BY seq", nik_hashes
        )
    else:
        rows = await pool.fetch(
            MESSAGES_SQL + " WHERE participant_id = $1 ORDER BY seq", participant_id
        )
    out = [dict(r) for r in rows]
    if out:
        attempts = await pool.fetch(
            "SELECT message_id, attempt, outcome, http_status, error, reconciled, actor, at"
            " FROM message_attempts WHERE message_id = ANY($1::text[]) ORDER BY id",
            [r["message_id"] for r in out],
        )
        for r in out:
            r["history"] = [dict(a) for a in attempts if a["message_id"] == r["message_id"]]
    return out


async def not_delivered(pool: asyncpg.Pool, alert_s: float, limit: int) -> list[dict[str, Any]]:
    """Failed, undeliverable, and ambiguous sends unconfirmed for longer than `alert_s`."""
    rows = await pool.fetch(
        MESSAGES_SQL + " WHERE status IN ('failed', 'undeliverable')"
        " OR (status = 'sending' AND unconfirmed_since < now() - make_interval(secs => $2))"
        " ORDER BY updated_at DESC LIMIT $1",
        limit,
        alert_s,
    )
    return [dict(r) for r in rows]


class ResendRefused(ValueError):
    """The message cannot be resent (unknown, already taken, or still being worked on)."""


async def resend(
    pool: asyncpg.Pool, message_id: str, *, actor: str, note: str, alert_s: float
) -> dict[str, Any]:
    """An operator's resend of a failed message, or of an ambiguous one the provider's
    list has not confirmed for `alert_s` (after checking the provider's console). The
    message goes back to `pending` with a fresh token (an answer still on its way for the
    old one changes nothing) and a fresh retry horizon; its history records who and why."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT message_id, status, attempts, unconfirmed_since,"
            " unconfirmed_since < now() - make_interval(secs => $2) AS overdue"
            " FROM messages WHERE message_id = $1 FOR UPDATE",
            message_id,
            alert_s,
        )
        if row is None:
            raise ResendRefused(f"no message {message_id}")
        if row["status"] == "sending" and not row["overdue"]:
            raise ResendRefused(
                f"{message_id} is being sent or checked with the provider; it can be resent"
                f" once it has been unconfirmed for {alert_s:.0f} s"
            )
        if row["status"] not in ("failed", "sending"):
            raise ResendRefused(f"{message_id} is {row['status']}: nothing to resend")
        await conn.execute(
            "UPDATE messages SET status = 'pending', next_attempt_at = now(), claimed_by = NULL,"
            " attempt_token = gen_random_uuid(), lease_from = NULL, first_claimed_at = NULL,"
            " unconfirmed_since = NULL, error_code = NULL, updated_at = now()"
            " WHERE message_id = $1",
            message_id,
        )
        await conn.execute(
            "INSERT INTO message_attempts (message_id, attempt, outcome, error, actor)"
            " VALUES ($1, $2, 'resend', $3, $4)",
            message_id,
            row["attempts"],
            f"resent by an operator (was {row['status']}): {note}"[:500],
            actor,
        )
        return dict(row)
