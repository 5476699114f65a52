"""An enrolment flows from intake to SMS through a real broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from perlinsos_devruntime.agency import settled_run
from perlinsos_devruntime.cohort import generate_cohort
from perlinsos_devruntime.stack import Stack
from perlinsos_premium.queries import liability_by_line
from perlinsos_shared.clock import current_period
from perlinsos_shared.db import create_pool
from perlinsos_shared.settings import Settings

pytestmark = pytest.mark.flow


async def test_enrolments_flow_from_intake_to_sms(stack: Stack, settings: Settings) -> None:
    subs = generate_cohort(size=120, seed=7, fault_rate=0.1)
    keys = {(s.agency, s.request_id) for s in subs}
    async with settled_run(stack.bootstrap_servers, subs) as listener:
        o = listener.outcomes
        faulty = {(s.agency, s.request_id): s.fault for s in subs if s.fault}
        # every clean submission is enrolled and eligible; every intake fault is refused
        for s in subs:
            key = (s.agency, s.request_id)
            if s.fault is None:
                assert o.decisions[key]["outcome"] == "eligible", s.fault
        for key, fault in faulty.items():
            assert fault in o.rejections.get(key, []) or fault in [
                r["code"] for r in o.decisions.get(key, {}).get("reasons", [])
            ], (fault, o.rejections.get(key), o.decisions.get(key))
        eligible = [d for k, d in o.decisions.items() if k in keys and d["outcome"] == "eligible"]
        # one SMS per decision: each decision published once, each delivered once (one
        # duplicate plus one missing fails here), and one line per message in the file sink
        decided = {d["decision_id"] for k, d in o.decisions.items() if k in keys}
        assert {i: o.decision_count[i] for i in decided} == dict.fromkeys(decided, 1)
        assert {i: o.delivery_count[i] for i in decided} == dict.fromkeys(decided, 1)
        sent = Counter(
            json.loads(line)["id"] for line in settings.sms_file.read_text().splitlines()
        )
        assert set(sent.values()) == {1} and len(sent) == len(decided)
        # liability: Rp16,800 per eligible participant for this month, in ledger and summary
        period = current_period()
        pool = await create_pool(stack.database_url, "premium", max_size=1)
        try:
            for _ in range(50):
                await listener.poll()
                ledger = await liability_by_line(pool, period)
                published = {
                    line: s["amount_idr"] for (line, p), s in o.summaries.items() if p == period
                }
                if published == {line: v["amount_idr"] for line, v in ledger.items()}:
                    break
                await asyncio.sleep(0.1)
        finally:
            await pool.close()
        assert sum(v["amount_idr"] for v in ledger.values()) == 16_800 * len(eligible)
        assert published == {line: v["amount_idr"] for line, v in ledger.items()}
        for (line, p), summary in o.summaries.items():
            if p == period:
                assert summary["amount_idr"] == summary["jkk_idr"] + summary["jkm_idr"]
                assert summary["participants"] == ledger[line]["participants"]
