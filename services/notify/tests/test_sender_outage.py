"""Notify's sender and reconciler keep working, without a process restart, across
PostgreSQL being unreachable (every connection cut, new ones refused) and across a
PostgreSQL restart: every SMS goes out exactly once (issue 11, DESIGN.md "Nothing stops").

Real parts: a PostgreSQL server of the test's own (so it can be restarted), reached by the
sender only through a TCP proxy the test can cut; the fake Twilio on the wire; the loops
under the same supervisor a service runs them with. Decisions are stored beside the sender
(straight to PostgreSQL) before, during and after each fault.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from typing import Any

import pytest

from perlinsos_devruntime.embedded import EmbeddedPostgres
from perlinsos_devruntime.fake_twilio import FakeTwilio
from perlinsos_devruntime.tcpproxy import TcpProxy
from perlinsos_notify.providers import make_provider
from perlinsos_notify.sender import Sender
from perlinsos_shared.db import open_service_db
from perlinsos_shared.supervisor import Supervisor

from .conftest import decision, sms_settings, store

pytestmark = pytest.mark.flow

OUTAGE_S = float(os.environ.get("PERLINSOS_TEST_OUTAGE_S", "20"))


async def _until(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_sender_keeps_working_across_postgres_unreachable_and_restarted(
    own_postgres: EmbeddedPostgres, fake: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="perlinsos.supervisor")
    settings = sms_settings(fake, sms_batch_size=20)
    fake.latency_s = 0.01
    direct_url = own_postgres.admin_url
    proxy = await asyncio.to_thread(TcpProxy(own_postgres.port).start)
    direct = await open_service_db(direct_url, "notify", pool_size=2)
    host, _, port = direct_url.partition("@")[2].partition("/")[0].rpartition(":")
    pool = await open_service_db(
        direct_url.replace(f"@{host}:{port}/", f"@{host}:{proxy.port}/"), "notify", pool_size=4
    )
    sender = Sender.from_settings(
        settings, lambda: pool, make_provider(settings), asyncio.Event(), lambda: None
    )
    supervisor = Supervisor("notify", backoff_initial_s=0.2, backoff_max_s=2.0, healthy_after_s=3)
    sending = supervisor.start("sms-sender", sender.run)
    reconciling = supervisor.start("sms-reconciler", sender.reconciler.run)
    decided = []

    async def decide(n: int) -> None:
        batch = [decision() for _ in range(n)]
        decided.extend(batch)
        await store(direct, settings, batch)

    async def all_accepted() -> bool:
        n = await direct.fetchval("SELECT count(*) FROM messages WHERE status = 'accepted'")
        return bool(n == len(decided))

    def failing() -> set[str]:
        return set(supervisor.failing())

    async def sender_failing() -> bool:
        return "sms-sender" in failing()

    async def recovered() -> bool:
        return not failing()

    try:
        await decide(60)
        await _until(all_accepted, "first messages not sent")

        # 1. PostgreSQL unreachable for OUTAGE_S: decisions keep arriving meanwhile
        fake.latency_s = 0.3  # some sends are in flight when the connections go
        await decide(40)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(proxy.cut)
        await decide(40)
        await _until(sender_failing, "sender not failing")
        await asyncio.sleep(max(0.0, OUTAGE_S - 1))
        fake.latency_s = 0.01
        await asyncio.to_thread(proxy.restore)
        await _until(all_accepted, "messages not sent after the outage", timeout=120)
        await _until(recovered, "loops did not recover", timeout=60)
        restarts_after_cut = sending.restarts
        assert restarts_after_cut >= 1

        # 2. PostgreSQL restarted (fast shutdown, then started on the same data)
        await direct.close()
        await asyncio.to_thread(own_postgres.stop)
        await _until(sender_failing, "sender not failing")
        await asyncio.sleep(2)
        await asyncio.to_thread(own_postgres.start)
        direct = await open_service_db(direct_url, "notify", pool_size=2)
        await decide(40)
        await _until(all_accepted, "messages not sent after the restart", timeout=120)
        await _until(recovered, "loops did not recover", timeout=60)
        assert sending.restarts > restarts_after_cut
        assert sending.status == "running" and reconciling.status == "running"
    finally:
        await supervisor.stop()
        await sender.close()
        await pool.close()
        await asyncio.to_thread(proxy.stop)

    # every SMS exactly once, and each settled message published once
    sent = Counter(m["to"] for m in fake.messages)
    assert set(sent) == {d.phone_e164 for d in decided}
    assert set(sent.values()) == {1}, [to for to, n in sent.items() if n > 1]
    try:
        events = await direct.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = 'notify.deliveries.v1'"
        )
        assert events == len(decided)
    finally:
        await direct.close()
