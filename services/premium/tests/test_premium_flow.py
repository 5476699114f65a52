"""The 24,300 cohort through premium on a real broker and PostgreSQL: liabilities, replay, close, back-dated exit,
and an XLSX export whose totals equal the summary events finance received."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from openpyxl import load_workbook

from perlinsos_devruntime.agency import Listener
from perlinsos_devruntime.cohort import FUNDING_LINE_BY_OCCUPATION, generate_cohort
from perlinsos_devruntime.stack import Stack
from perlinsos_premium.billing import next_period
from perlinsos_premium.closing import close_month
from perlinsos_premium.export import HEADER_ROW, gather, write_xlsx
from perlinsos_premium.queries import liability_by_line
from perlinsos_shared.clock import current_period, now_local, today_local
from perlinsos_shared.db import create_pool
from perlinsos_shared.events import FundingLine
from perlinsos_shared.settings import Settings
from perlinsos_shared.topics import DECISIONS, PARTICIPANTS

pytestmark = pytest.mark.flow

LINES = [line.value for line in FundingLine]


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    s = Stack(settings, http_port_base=0)
    s.start_infrastructure()
    s.start_services(("premium",))
    yield s
    s.stop()


async def _until(check: Any, listener: Listener, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await listener.poll()
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("condition not reached in time")


async def _sentinels(bootstrap: str) -> list[str]:
    """A no-op decision on every partition: once premium has them, it has all before them."""
    ids = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(DECISIONS.partitions):
            event_id = str(uuid.uuid4())
            envelope = {
                "specversion": "1.0",
                "id": event_id,
                "source": "perlinsos/test",
                "type": "perlinsos.eligibility.decided.v1",
                "data": {
                    "decision_id": event_id, "participant_id": f"SENTINEL-{event_id}",
                    "outcome": "waitlisted", "rule_version": "test", "occupation": "NELAYAN",
                    "agency": "DKP", "request_id": event_id, "first_name": "X",
                    "phone_e164": "+6281200000000", "decided_at": now_local().isoformat(),
                },
            }  # fmt: skip
            await producer.send_and_wait(
                DECISIONS.name, json.dumps(envelope).encode(), partition=partition
            )
            ids.append(event_id)
    finally:
        await producer.stop()
    return ids


async def _caught_up(stack: Stack, pool: asyncpg.Pool, listener: Listener) -> None:
    ids = await _sentinels(stack.bootstrap_servers)

    async def seen() -> bool:
        n = await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = ANY($1)", ids)
        return bool(n == len(ids))

    await _until(seen, listener)


async def _replay_decisions(bootstrap: str) -> int:
    """Publish every decision on the topic again, exactly as it was (a redelivery)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(DECISIONS.name, p) for p in range(DECISIONS.partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        sent = 0
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    if r.offset < ends[tp]:
                        await producer.send(DECISIONS.name, r.value, key=r.key, headers=r.headers)
                        sent += 1
        await producer.flush()
        return sent
    finally:
        await producer.stop()
        await consumer.stop()


async def test_cohort_liability_replay_close_and_back_dated_exit(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    subs = generate_cohort(
        size=int(os.environ.get("PREMIUM_FLOW_COHORT", "24300")), seed=2025, fault_rate=0.03
    )
    period = current_period()
    listener = Listener(stack.bootstrap_servers)
    await listener.start()
    pool = await create_pool(stack.database_url, "premium", max_size=2)
    o = listener.outcomes
    try:
        # what registry and eligibility emit for the cohort: every clean submission
        # enrolled; eligible from today, one in fifty waitlisted, faulty ones refused
        enrolled, decisions = _cohort_events(subs)
        await _publish(stack.bootstrap_servers, PARTICIPANTS.name, enrolled)
        await _publish(stack.bootstrap_servers, DECISIONS.name, decisions)
        eligible = [d for d in decisions if d["outcome"] == "eligible"]
        billed_here = {
            line: sum(
                1 for d in eligible if d["funding_line"] == line and d["cover_start"][:7] == period
            )
            for line in LINES
        }
        assert all(billed_here.values())

        async def summaries_match_ledger() -> dict[str, dict[str, int]] | None:
            ledger = await liability_by_line(pool, period)
            published = {ln: s for (ln, p), s in o.summaries.items() if p == period}
            if all(
                published.get(ln, {}).get("amount_idr") == v["amount_idr"]
                for ln, v in ledger.items()
            ):
                return ledger
            return None

        await _caught_up(stack, pool, listener)
        ledger = await _until(summaries_match_ledger, listener)
        for line in LINES:
            s = o.summaries[(line, period)]
            assert s["participants"] == billed_here[line] == ledger[line]["participants"]
            assert s["amount_idr"] == 16_800 * billed_here[line], line
            assert (s["jkk_idr"], s["jkm_idr"]) == (10_000 * s["participants"], 6_800 * s["participants"])  # fmt: skip
        revisions = {k: s["revision"] for k, s in o.summaries.items()}
        # coalesced: far fewer revisions than enrolments
        assert sum(revisions.values()) < len(eligible) / 100

        # replaying every decision changes nothing
        assert await _replay_decisions(stack.bootstrap_servers) >= len(eligible)
        await _caught_up(stack, pool, listener)
        await asyncio.sleep(1.5)  # more than one publication interval
        await listener.poll()
        assert await liability_by_line(pool, period) == ledger
        assert {k: s["revision"] for k, s in o.summaries.items()} == revisions

        # close the month; closing again changes nothing
        result = await close_month(pool, period, today_local())
        assert {s.funding_line.value for s in result.summaries} == set(LINES)
        assert (await close_month(pool, period, today_local())).already_closed

        async def closed_seen() -> bool:
            return all(o.summaries[(ln, period)]["status"] == "closed" for ln in LINES)

        await _until(closed_seen, listener)
        closed = {ln: dict(o.summaries[(ln, period)]) for ln in LINES}
        assert closed["PERWAKO-30-2025"]["amount_idr"] == 16_800 * billed_here["PERWAKO-30-2025"]

        # a back-dated exit: someone who had left before the cover started
        leaver = next(d for d in eligible if d["funding_line"] == "PERWAKO-3-2023")
        exit_decision = {
            **leaver,
            "decision_id": str(uuid.uuid4()),
            "outcome": "exited",
            "cover_end": (now_local().date().replace(day=1) - timedelta(days=1)).isoformat(),
            "decided_at": now_local().isoformat(),
        }
        await _publish(stack.bootstrap_servers, DECISIONS.name, [exit_decision])
        nxt = next_period(period)

        async def adjustment_seen() -> bool:
            s = o.summaries.get(("PERWAKO-3-2023", nxt))
            return bool(s and s["adjustments_idr"] == -16_800)

        await _until(adjustment_seen, listener)
        adjusted = o.summaries[("PERWAKO-3-2023", nxt)]
        assert adjusted["amount_idr"] == adjusted["jkk_idr"] + adjusted["jkm_idr"] - 16_800
        assert {ln: o.summaries[(ln, period)] for ln in LINES} == closed  # closed: untouched
        assert (await liability_by_line(pool, period)) == ledger

        # the finance export: totals equal the closed summary events
        export = await gather(pool, period, today_local())
        wb = load_workbook(write_xlsx(export, tmp_path / "finance.xlsx"))
        sheet = wb["Ringkasan"]
        rows = {sheet.cell(HEADER_ROW + 1 + i, 1).value: HEADER_ROW + 1 + i for i in range(4)}
        for ln in LINES:
            r = rows[ln]
            assert sheet.cell(r, 4).value == closed[ln]["participants"]
            assert sheet.cell(r, 8).value == closed[ln]["amount_idr"]
            line_sheet = wb[ln]
            total_row = HEADER_ROW + 1 + closed[ln]["participants"]
            assert line_sheet.cell(total_row, 1).value == "TOTAL"
            assert line_sheet.cell(total_row, 8).value == closed[ln]["amount_idr"]
        assert sheet.cell(rows["TOTAL"], 8).value == sum(c["amount_idr"] for c in closed.values())
    finally:
        await pool.close()
        await listener.stop()


def _cohort_events(subs: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    today = today_local().isoformat()
    enrolled: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    for i, sub in enumerate(s for s in subs if s.fault is None):
        data = sub.data
        pid = f"P{i:07d}"
        enrolled.append(
            {
                "participant_id": pid,
                "nik": data["nik"],
                "full_name": data["full_name"],
                "birth_date": data["birth_date"],
                "sex": data["sex"],
                "phone_e164": "+6281200000000",
                "address": data["address"],
                "occupation": data["occupation"],
                "existing_bpjs_tk": False,
                "agency": sub.agency,
                "request_id": sub.request_id,
                "enrolled_at": now_local().isoformat(),
            }
        )
        waitlisted = i % 50 == 49
        decisions.append(
            {
                "decision_id": str(uuid.uuid4()),
                "participant_id": pid,
                "outcome": "waitlisted" if waitlisted else "eligible",
                "funding_line": FUNDING_LINE_BY_OCCUPATION[data["occupation"]],
                "cover_start": None if waitlisted else today,
                "rule_version": "test",
                "occupation": data["occupation"],
                "agency": sub.agency,
                "request_id": sub.request_id,
                "first_name": data["full_name"].split()[0],
                "phone_e164": "+6281200000000",
                "decided_at": now_local().isoformat(),
            }
        )
    return enrolled, decisions


async def _publish(bootstrap: str, topic: str, items: list[dict[str, Any]]) -> None:
    types = {PARTICIPANTS.name: "perlinsos.participant.enrolled.v1"}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for data in items:
            envelope = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "perlinsos/test",
                "type": types.get(topic, "perlinsos.eligibility.decided.v1"),
                "time": now_local().isoformat(),
                "datacontenttype": "application/json",
                "data": data,
            }
            await producer.send(
                topic, json.dumps(envelope).encode(), key=data["participant_id"].encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
