"""SIGTERM mid-stream: every service stops by itself (exit 0) and nothing in flight is lost.

Real: the broker, PostgreSQL and all four services as processes. Submissions are still
flowing when each service gets SIGTERM; each must exit with status 0 within the grace
period (a process killed with SIGKILL shows -9, one that crashed another status). Started
again, the services finish the work: every submission decided or refused, each decision
published once and its SMS outcome once.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from perlinsos_devruntime.agency import Listener, publish_submissions
from perlinsos_devruntime.cohort import generate_cohort
from perlinsos_devruntime.stack import Stack
from perlinsos_shared.settings import Settings

# Four service starts and 3,000 submissions: a few minutes on 2 cores, so it runs with the
# fault suite (`make test-faults`), not in `make test`.
pytestmark = [pytest.mark.flow, pytest.mark.faults]

GRACE_S = 30.0  # well under what a runtime (compose, Kubernetes) would wait before SIGKILL


async def test_sigterm_mid_stream_exits_zero_and_loses_nothing(settings: Settings) -> None:
    subs = generate_cohort(size=3000, seed=21, fault_rate=0.05)
    keys = {(s.agency, s.request_id) for s in subs}
    stack = Stack(settings, http_port_base=0)
    await asyncio.to_thread(stack.start_infrastructure)
    listener = Listener(stack.bootstrap_servers)
    try:
        first = await asyncio.to_thread(stack.start_services, timeout=240)
        await listener.start()
        listener.outcomes.watch(keys)
        await publish_submissions(
            stack.bootstrap_servers, ((s.agency, s.data["nik"], s.data) for s in subs)
        )
        deadline = time.monotonic() + 120
        while listener.outcomes.settled(keys) < len(keys) // 10:  # work has started
            assert time.monotonic() < deadline, "nothing decided"
            await listener.poll()
        o = listener.outcomes
        unsent = {d["decision_id"] for k, d in o.decisions.items() if k in keys} - set(o.deliveries)
        in_flight = len(keys) - o.settled(keys) + len(unsent)
        for svc in first:
            svc.process.send_signal(signal.SIGTERM)
        codes = {}
        for svc in first:
            codes[svc.name] = await asyncio.to_thread(svc.process.wait, GRACE_S)
        assert codes == dict.fromkeys(("registry", "eligibility", "premium", "notify"), 0)
        assert in_flight > 0  # the stop did interrupt work

        await asyncio.to_thread(stack.start_services, timeout=240)
        await listener.wait_settled(keys, timeout=240)
    finally:
        await listener.stop()
        await asyncio.to_thread(stack.stop)
    decided = {d["decision_id"] for k, d in o.decisions.items() if k in keys}
    assert len(decided) + sum(1 for k in keys if k in o.rejections) == len(keys)
    assert {i: o.decision_count[i] for i in decided} == dict.fromkeys(decided, 1)
    assert {i: o.delivery_count[i] for i in decided} == dict.fromkeys(decided, 1)
    assert {k: n for k, n in o.rejection_count.items() if k in keys} == {
        k: 1 for k in keys if k in o.rejections
    }
