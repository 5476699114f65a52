"""The sender against the fake Twilio and a real PostgreSQL: retries, failures,
undeliverable numbers, two senders, and claims left behind by a dead sender."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import date

import asyncpg
import pytest

from perlinsos_devruntime.fake_twilio import FakeTwilio, fault
from perlinsos_notify.delivery import PHONE_INVALID, PHONE_NOT_MOBILE, RETRIES_EXHAUSTED
from perlinsos_notify.providers import make_provider
from perlinsos_notify.sender import Sender
from perlinsos_notify.store import CLAIM_SQL, LIVENESS_LOCK_NS
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DELIVERIES

from .conftest import decision, run_until, sms_settings, store

pytestmark = pytest.mark.db  # PostgreSQL only: no broker, no service process


def sender(settings: Settings, pool: asyncpg.Pool, **kwargs: object) -> Sender:
    return Sender.from_settings(
        settings, lambda: pool, make_provider(settings), asyncio.Event(), lambda: None, **kwargs
    )


async def deliveries(pool: asyncpg.Pool) -> list[dict[str, object]]:
    rows = await pool.fetch(
        "SELECT value FROM outbox WHERE topic = $1 ORDER BY id", DELIVERIES.name
    )
    return [json.loads(bytes(r["value"]))["data"] for r in rows]


async def settled(pool: asyncpg.Pool) -> bool:
    left = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE status IN ('pending', 'sending')"
    )
    return bool(left == 0)


@pytest.mark.parametrize(
    "timeout",
    ["slow-lost", "slow", "drop-after"],
    ids=["timeout-not-taken", "timeout-but-taken", "dropped-after-taking"],
)
async def test_429_500_and_a_timeout_then_success_give_exactly_one_sms(
    notify_pool: asyncpg.Pool, fake: FakeTwilio, timeout: str
) -> None:
    settings = sms_settings(fake)
    d = decision()
    await store(notify_pool, settings, [d])
    fake.script([fault("429", 0.2), "500", fault(timeout, 1.0)])
    await run_until([sender(settings, notify_pool)], lambda: settled(notify_pool))

    assert len(fake.accepted_to(d.phone_e164)) == 1
    [sms] = fake.messages
    row = await notify_pool.fetchrow("SELECT * FROM messages")
    assert row["status"] == "accepted"
    assert row["provider_message_id"] == sms["sid"] and row["segments"] == 1
    assert row["reconciled"] is True  # the ambiguous attempt was checked, not resent blindly
    posts = [r for r in fake.requests if r.method == "POST"]
    taken_by_timeout = timeout in ("slow", "drop-after")
    assert len(posts) == (3 if taken_by_timeout else 4)
    assert any(r.method == "GET" for r in fake.requests)
    [delivery] = await deliveries(notify_pool)
    assert delivery["status"] == "accepted" and delivery["provider_message_id"] == sms["sid"]
    assert delivery["decision_id"] == d.decision_id
    attempts = await notify_pool.fetch(
        "SELECT outcome, http_status FROM message_attempts ORDER BY id"
    )
    assert [a["http_status"] for a in attempts][:2] == [429, 500]
    assert attempts[-1]["outcome"] == "accepted"


async def test_retry_after_is_waited_for(notify_pool: asyncpg.Pool, fake: FakeTwilio) -> None:
    settings = sms_settings(fake)
    await store(notify_pool, settings, [decision()])
    fake.script([fault("429", 1.0)])
    await run_until([sender(settings, notify_pool)], lambda: settled(notify_pool))
    times = await notify_pool.fetch("SELECT at FROM message_attempts ORDER BY id")
    row = await notify_pool.fetchrow("SELECT claimed_at, status FROM messages")
    assert row["status"] == "accepted"
    # the accepted try was claimed no earlier than Retry-After after the 429 was recorded
    assert (row["claimed_at"] - times[0]["at"]).total_seconds() >= 0.95


async def test_retries_end_at_the_horizon_and_the_failure_is_reported(
    notify_pool: asyncpg.Pool, fake: FakeTwilio
) -> None:
    settings = sms_settings(fake, sms_retry_horizon_s=1.0, sms_backoff_max_s=0.2)
    d = decision()
    await store(notify_pool, settings, [d])
    fake.script(["503", "500"] * 200)
    await run_until([sender(settings, notify_pool)], lambda: settled(notify_pool))
    row = await notify_pool.fetchrow("SELECT status, attempts, error_code FROM messages")
    assert (row["status"], row["error_code"]) == ("failed", RETRIES_EXHAUSTED)
    assert row["attempts"] >= 3  # retried, with capped backoff, for the whole horizon
    assert fake.messages == []
    [delivery] = await deliveries(notify_pool)
    assert delivery["status"] == "failed" and delivery["code"] == RETRIES_EXHAUSTED


async def test_landlines_and_invalid_numbers_are_undeliverable_and_repeats_are_one(
    notify_pool: asyncpg.Pool, fake: FakeTwilio
) -> None:
    settings = sms_settings(fake)
    landline = decision(phone_e164="+62778123456")
    invalid = decision(phone_e164="+62812")
    good = decision()
    await store(notify_pool, settings, [landline, invalid, good, good])
    await store(notify_pool, settings, [good, landline])  # the same decisions again
    await run_until([sender(settings, notify_pool)], lambda: settled(notify_pool))
    status = {
        r["decision_id"]: (r["status"], r["error_code"])
        for r in await notify_pool.fetch("SELECT decision_id, status, error_code FROM messages")
    }
    assert status == {
        landline.decision_id: ("undeliverable", PHONE_NOT_MOBILE),
        invalid.decision_id: ("undeliverable", PHONE_INVALID),
        good.decision_id: ("accepted", None),
    }
    assert [m["to"] for m in fake.messages] == [good.phone_e164]
    events = Counter(str(e["status"]) for e in await deliveries(notify_pool))
    assert events == {"undeliverable": 2, "accepted": 1}


async def test_two_senders_send_each_message_exactly_once(
    notify_pool: asyncpg.Pool, database_url: str, fake: FakeTwilio
) -> None:
    from perlinsos_shared.db import create_pool

    settings = sms_settings(fake, sms_batch_size=40)
    ds = [decision() for _ in range(300)]
    await store(notify_pool, settings, ds)
    fake.latency_s = 0.002
    fake.script(["429", "500", "ok", "ok"] * 10)
    other_pool = await create_pool(database_url, "notify", max_size=4)
    try:
        a, b = sender(settings, notify_pool), sender(settings, other_pool)

        async def counted() -> bool:
            # a round counts what it accepted once its transaction has committed and its
            # connection is back in the pool: stopping the senders at the commit lost counts
            return await settled(notify_pool) and a.accepted + b.accepted >= 300

        await run_until([a, b], counted, timeout=180)
    finally:
        await other_pool.close()
    # the property, not the schedule: each message handed to the provider once, and one
    # delivery event per decision, however the two senders happened to share the work
    sent = Counter(m["to"] for m in fake.messages)
    assert len(sent) == 300 and set(sent.values()) == {1}
    assert a.accepted + b.accepted == 300
    delivered = Counter(str(d["decision_id"]) for d in await deliveries(notify_pool))
    assert delivered == Counter({d.decision_id: 1 for d in ds})


async def test_claims_of_a_dead_sender_are_reconciled_before_any_resend(
    notify_pool: asyncpg.Pool, fake: FakeTwilio
) -> None:
    settings = sms_settings(fake)
    taken, not_taken = decision(), decision()
    await store(notify_pool, settings, [taken, not_taken])
    # a sender that died: it claimed both (its liveness lock is gone) and the provider
    # accepted one of them before the process ended
    await notify_pool.fetch(CLAIM_SQL, "notify-dead", 10)
    body = await notify_pool.fetchval(
        "SELECT body FROM messages WHERE decision_id = $1", taken.decision_id
    )
    provider = make_provider(settings)
    from perlinsos_notify.providers import Outgoing

    await provider.send(Outgoing("x", taken.phone_e164, body))
    await provider.close()
    first_sid = fake.messages[0]["sid"]

    await run_until([sender(settings, notify_pool)], lambda: settled(notify_pool))
    assert len(fake.accepted_to(taken.phone_e164)) == 1
    assert len(fake.accepted_to(not_taken.phone_e164)) == 1
    rows = {
        r["decision_id"]: r
        for r in await notify_pool.fetch(
            "SELECT decision_id, status, provider_message_id, attempts FROM messages"
        )
    }
    assert rows[taken.decision_id]["provider_message_id"] == first_sid
    assert rows[taken.decision_id]["attempts"] == 1
    assert rows[not_taken.decision_id]["status"] == "accepted"
    assert rows[not_taken.decision_id]["attempts"] == 2


async def test_a_live_senders_claims_are_left_alone(
    notify_pool: asyncpg.Pool, fake: FakeTwilio
) -> None:
    settings = sms_settings(fake)
    await store(notify_pool, settings, [decision()])
    holder = await notify_pool.acquire()
    try:
        # a live sender: holds its liveness lock, claimed the row, still waiting on the provider
        await holder.execute(
            "SELECT pg_advisory_lock($1, hashtext('notify-alive'))", LIVENESS_LOCK_NS
        )
        await notify_pool.fetch(CLAIM_SQL, "notify-alive", 10)
        s = sender(settings, notify_pool)
        assert await s.reconcile_once() == 0
        assert await s.send_once() == 0
        assert fake.requests == []
    finally:
        await notify_pool.release(holder)


async def test_one_participants_messages_go_out_in_decision_order(
    notify_pool: asyncpg.Pool, fake: FakeTwilio
) -> None:
    """'You are covered' is retried after a 503; 'your cover ended' waits for it."""
    settings = sms_settings(fake)
    covered = decision()
    ended = decision(
        participant_id=covered.participant_id,
        phone_e164=covered.phone_e164,
        outcome="exited",
        cover_end=date(2026, 3, 31),
    )
    await store(notify_pool, settings, [covered, ended])
    fake.script(["503", "503"])
    await run_until([sender(settings, notify_pool)], lambda: settled(notify_pool))
    sent = [m["body"] for m in fake.accepted_to(covered.phone_e164)]
    bodies = {
        r["decision_id"]: r["body"]
        for r in await notify_pool.fetch("SELECT decision_id, body FROM messages")
    }
    assert sent == [bodies[covered.decision_id], bodies[ended.decision_id]]


async def test_a_live_senders_queued_claim_is_never_taken_over_but_a_handed_one_is(
    notify_pool: asyncpg.Pool, fake: FakeTwilio
) -> None:
    """The lease counts from the hand-over to the provider, not from the claim."""
    settings = sms_settings(fake, sms_claim_lease_s=1.0)
    queued, handed = decision(), decision()
    await store(notify_pool, settings, [queued, handed])
    holder = await notify_pool.acquire()
    try:
        await holder.execute(
            "SELECT pg_advisory_lock($1, hashtext('notify-alive'))", LIVENESS_LOCK_NS
        )
        await notify_pool.fetch(CLAIM_SQL, "notify-alive", 10)
        # claimed an hour ago, still waiting behind the rate limiter: left alone
        await notify_pool.execute("UPDATE messages SET claimed_at = now() - interval '1 hour'")
        # handed over an hour ago and never recorded: its lease ran out
        await notify_pool.execute(
            "UPDATE messages SET lease_from = now() - interval '1 hour' WHERE decision_id = $1",
            handed.decision_id,
        )
        s = sender(settings, notify_pool)
        assert await s.reconcile_once() == 1
        rows = {
            r["decision_id"]: r
            for r in await notify_pool.fetch("SELECT decision_id, status, claimed_by FROM messages")
        }
        assert rows[queued.decision_id]["claimed_by"] == "notify-alive"
        assert rows[handed.decision_id]["status"] == "pending"  # not in the provider's list
        assert [r.method for r in fake.requests if r.method == "POST"] == []
    finally:
        await notify_pool.release(holder)


async def test_two_slow_instances_behind_a_rate_limit_send_each_message_once(
    notify_pool: asyncpg.Pool, database_url: str, fake: FakeTwilio
) -> None:
    """Claims wait behind the rate limiter and two slow requests much longer than the
    lease would allow if it counted from the claim: nobody takes them over."""
    from perlinsos_shared.db import create_pool

    settings = sms_settings(
        fake,
        sms_timeout_s=2.0,
        sms_claim_lease_s=0.1,  # the lease is then twice the request bound: 8 s
        sms_concurrency=2,
        sms_rate_limit_per_s=4.0,
        sms_batch_size=40,
    )
    ds = [decision() for _ in range(24)]
    await store(notify_pool, settings, ds)
    fake.latency_s = 0.8  # 24 messages, 2 at a time: the last waits ~10 s in its queue
    other_pool = await create_pool(database_url, "notify", max_size=4)
    try:
        a, b = sender(settings, notify_pool), sender(settings, other_pool)
        await run_until([a, b], lambda: settled(notify_pool), timeout=120)
    finally:
        await other_pool.close()
    sent = Counter(m["to"] for m in fake.messages)
    assert len(sent) == 24 and set(sent.values()) == {1}
    assert len(await deliveries(notify_pool)) == 24


async def test_a_send_the_list_cannot_confirm_is_surfaced_and_reconciled_later(
    notify_pool: asyncpg.Pool, fake: FakeTwilio
) -> None:
    settings = sms_settings(fake, sms_unconfirmed_alert_s=0.5)
    d = decision()
    await store(notify_pool, settings, [d])
    fake.list_failing = True
    fake.script([fault("drop-after")])
    s = sender(settings, notify_pool)

    async def unconfirmed() -> bool:
        return await s.reconciler.sample_unconfirmed() == 1

    await run_until([s], unconfirmed, timeout=60)
    row = await notify_pool.fetchrow("SELECT status, unconfirmed_since FROM messages")
    assert row["status"] == "sending" and row["unconfirmed_since"] is not None
    assert len(fake.messages) == 1  # never resent blindly while the list cannot answer
    fake.list_failing = False
    await run_until([sender(settings, notify_pool)], lambda: settled(notify_pool), timeout=60)
    assert len(fake.messages) == 1
    row = await notify_pool.fetchrow("SELECT status, unconfirmed_since, reconciled FROM messages")
    assert row["status"] == "accepted" and row["reconciled"] is True
    assert row["unconfirmed_since"] is None
