"""Premium on a real broker and PostgreSQL: liabilities of a cohort, replay, a payment,
month close, a back-dated exit, the operator and finance commands, and an XLSX export
whose totals equal the summary events finance received.

Real: the broker, PostgreSQL and premium as a process; the `perlinsos premium` and
`perlinsos finance` commands run in-process as an operator runs them, on the same broker
and database. Not running: registry and eligibility. What they would emit is built here
from the event models in `shared/` (`ParticipantEnrolled`, `EligibilityDecided`), and each
decision is the one eligibility's own rule functions give on the rule book it ships
(`assess`, the funding window, the quota), so a change to the events or to the rules
changes these inputs. The chain from intake to summary runs whole in
`tests/test_walking_skeleton.py` and `tests/test_recovery.py`.

"Nothing more happened" (a replay, a repeated payment) is proven with sentinels, not
sleeps: a no-op decision on every partition, applied (premium's inbox), no summary left
to publish, the outbox published, then the summaries topic read to its end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from openpyxl import load_workbook
from typer.testing import CliRunner

from perlinsos_devruntime.settle import (
    bpjs_answer_sentinel,
    publish_sentinels,
    read_to_end,
    until_settled,
)
from perlinsos_devruntime.stack import Stack
from perlinsos_eligibility.domain import Applicant, assess, free_places, window_check
from perlinsos_eligibility.reasons import reason
from perlinsos_eligibility.rules import load_rule_book
from perlinsos_premium.billing import next_period
from perlinsos_premium.cli import app as premium_cli
from perlinsos_premium.cli import finance_app, idr
from perlinsos_premium.export import HEADER_ROW
from perlinsos_premium.queries import liability_by_line
from perlinsos_shared.clock import current_period, now_local, today_local
from perlinsos_shared.db import create_pool
from perlinsos_shared.envelope import encode, make_event
from perlinsos_shared.events import (
    Address,
    EligibilityDecided,
    FundingLine,
    Occupation,
    ParticipantEnrolled,
)
from perlinsos_shared.settings import Settings, get_settings
from perlinsos_shared.topics import DECISIONS, PARTICIPANTS, SUMMARIES

pytestmark = pytest.mark.flow

LINES = [line.value for line in FundingLine]
Key = tuple[str, str]  # (funding line, period)


@pytest.fixture
def stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    s = Stack(settings, http_port_base=0)
    s.start_infrastructure()
    s.start_services(("premium",))
    # the operator commands find the same broker and database
    monkeypatch.setenv("DATABASE_URL", s.database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", s.bootstrap_servers)
    monkeypatch.setenv("PERLINSOS_KAFKA_IDEMPOTENT", str(settings.kafka_idempotent).lower())
    get_settings.cache_clear()
    yield s
    s.stop()
    get_settings.cache_clear()


# --- inputs: what registry and eligibility would emit ---------------------------------


def cohort(size: int) -> list[tuple[ParticipantEnrolled, EligibilityDecided]]:
    """`size` people over every occupation, enrolled today, each decided as eligibility's
    rules decide: criteria (`assess`; some are too old, some already BPJS members), then a
    place while the line's quota and funding window give one, else the waitlist."""
    book = load_rule_book()
    today, now = today_local(), now_local()
    holders: Counter[FundingLine] = Counter()
    occupations = list(Occupation)
    out = []
    for i in range(size):
        occupation = occupations[i % len(occupations)]
        years = 70 if i % 41 == 40 else 20 + i % 40
        born = date(today.year - years, 1 + i % 12, 1 + i % 28)
        sex = "P" if i % 2 else "L"
        address = Address(kecamatan="Sekupang", kelurahan="Tiban Lama", rt="001", rw="002")
        member = i % 53 == 52
        dd = born.day + (40 if sex == "P" else 0)
        person = ParticipantEnrolled(
            participant_id=f"P{i:07d}",
            nik=f"217101{dd:02d}{born:%m%y}{i % 9999 + 1:04d}",
            full_name=f"Peserta Nomor {i}",
            birth_date=born,
            sex=sex,
            phone_e164=f"+62812{i:08d}",
            address=address,
            occupation=occupation,
            existing_bpjs_tk=member,
            agency="TEST",
            request_id=f"R{i}",
            enrolled_at=now,
        )
        a = assess(Applicant(born, address, occupation, member), book, today)
        fields: dict[str, Any] = {"funding_line": a.funding_line, "rule_version": a.rule_version}
        if not a.passed:
            fields |= {"outcome": "ineligible", "reasons": a.reasons}
        else:
            assert a.rule_set is not None and a.funding_line is not None
            line = a.funding_line
            if free_places(a.rule_set, today, holders[line]) > 0:
                holders[line] += 1
                fields |= {"outcome": "eligible", "cover_start": today}
            else:
                window = window_check(a.rule_set, today)
                why = window.reason or reason("QUOTA_FULL")
                fields |= {"outcome": "waitlisted", "reasons": [why]}
        decision = EligibilityDecided(
            decision_id=str(uuid.uuid4()),
            participant_id=person.participant_id,
            occupation=occupation,
            agency=person.agency,
            request_id=person.request_id,
            first_name="Peserta",
            full_name=person.full_name,
            sex=sex,
            phone_e164=person.phone_e164,
            nik=person.nik,
            decided_at=now,
            **fields,
        )
        out.append((person, decision))
    return out


async def publish(
    bootstrap: str, topic: str, events: list[ParticipantEnrolled] | list[EligibilityDecided]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for e in events:
            event = make_event("test/upstream", e, subject=e.participant_id)
            await producer.send(topic, encode(event), key=e.participant_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


def sentinel(partition: int) -> tuple[str, bytes]:
    """A waitlisted decision on nobody premium knows: it bills nothing and changes no
    summary, but it is recorded in premium's inbox once applied."""
    decision = EligibilityDecided(
        decision_id=str(uuid.uuid4()),
        participant_id=f"SENTINEL-{uuid.uuid4()}",
        outcome="waitlisted",
        rule_version="sentinel",
        occupation=Occupation.NELAYAN,
        agency="TEST",
        request_id=f"sentinel-{partition}",
        first_name="X",
        phone_e164="+6281200000000",
        decided_at=now_local(),
    )
    event = make_event("test/sentinel", decision)
    return event.id, encode(event)


# --- what finance sees ----------------------------------------------------------------


class Summaries:
    """Every event on premium.summaries.v1 from the beginning, in order."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        self.events: list[dict[str, Any]] = []

    async def start(self) -> None:
        await self.consumer.start()
        parts = [TopicPartition(SUMMARIES.name, p) for p in range(SUMMARIES.partitions)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    def _keep(self, values: list[bytes]) -> None:
        self.events += [json.loads(v)["data"] for v in values]

    async def poll(self) -> None:
        got = await self.consumer.getmany(timeout_ms=100)
        self._keep([r.value for records in got.values() for r in records if r.value])

    @property
    def latest(self) -> dict[Key, dict[str, Any]]:
        """The latest revision per key (what a compacted topic keeps)."""
        out: dict[Key, dict[str, Any]] = {}
        for e in self.events:
            out[(e["funding_line"], e["period"])] = e
        return out

    async def until(self, check: Callable[[], bool], timeout: float = 180) -> None:
        """Read on until `check()` holds (a definite condition on what was received)."""
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            await self.poll()

    async def settled(self, pool: asyncpg.Pool) -> None:
        """Everything premium will publish for what it was given is in `events`."""
        ids = await publish_sentinels(
            self.bootstrap, DECISIONS.name, DECISIONS.partitions, sentinel
        )
        ids += await publish_sentinels(
            self.bootstrap, PARTICIPANTS.name, PARTICIPANTS.partitions, bpjs_answer_sentinel
        )
        await until_settled(
            pool, ids, also="SELECT count(*) FROM summaries WHERE changed", poll=self.poll
        )
        records = await read_to_end(self.consumer, SUMMARIES.name, SUMMARIES.partitions)
        self._keep([r.value for r in records if r.value is not None])


async def operator(app: Any, *args: str) -> str:
    """A `perlinsos premium|finance` command as an operator runs it (exit status 0)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "220"})
    assert result.exit_code == 0, (args, result.output, result.exception)
    return " ".join(result.output.split())


def table_rows(shown: str) -> list[list[str]]:
    """The first five cells of each table row in `shown`."""
    rows = re.findall(r"│ ([^│]+ │ [^│]+ │ [^│]+ │ [^│]+ │ [^│]+) │", shown)
    return [[c.strip() for c in row.split("│")] for row in rows]


async def test_cohort_liability_replay_payment_close_and_back_dated_exit(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    people = cohort(int(os.environ.get("PREMIUM_FLOW_COHORT", "24300")))
    period = current_period()
    summaries = Summaries(stack.bootstrap_servers)
    await summaries.start()
    pool = await create_pool(stack.database_url, "premium", max_size=2)
    try:
        await publish(stack.bootstrap_servers, PARTICIPANTS.name, [p for p, _ in people])
        await publish(stack.bootstrap_servers, DECISIONS.name, [d for _, d in people])
        eligible = [d for _, d in people if d.outcome == "eligible"]
        outcomes = Counter(d.outcome for _, d in people)
        assert outcomes["eligible"] and outcomes["ineligible"], outcomes  # both paths taken
        billed_here = {
            line: sum(1 for d in eligible if d.funding_line == line and d.cover_start)
            for line in LINES
        }
        assert all(billed_here.values()), billed_here

        # every eligible person billed this month: Rp16,800 each (JKK 10,000 + JKM 6,800)
        await summaries.settled(pool)
        latest = summaries.latest
        ledger = await liability_by_line(pool, period)
        for line in LINES:
            s = latest[(line, period)]
            assert s["participants"] == billed_here[line] == ledger[line]["participants"]
            assert s["amount_idr"] == 16_800 * billed_here[line] == ledger[line]["amount_idr"]
            assert (s["jkk_idr"], s["jkm_idr"]) == (10_000 * s["participants"], 6_800 * s["participants"])  # fmt: skip
        # each key's revisions increase in the order finance receives them (however many
        # publications the coalescing happened to make)
        by_key: dict[Key, list[int]] = {}
        for e in summaries.events:
            by_key.setdefault((e["funding_line"], e["period"]), []).append(e["revision"])
        assert all(r == sorted(set(r)) for r in by_key.values()), by_key
        published = len(summaries.events)

        # replaying every decision changes nothing and publishes nothing
        assert await replay_decisions(stack.bootstrap_servers) >= len(people)
        await summaries.settled(pool)
        assert len(summaries.events) == published, summaries.events[published:]
        assert await liability_by_line(pool, period) == ledger

        # finance pays part of a line's month: premium applies it (payments handler) and
        # republishes the line's month with what is paid and what is outstanding
        line, paid = "PERWAKO-49-2025", 16_800 * 10
        ref = f"SP2D-{uuid.uuid4().hex[:8]}"
        pay = ["record-payment", "--line", line, "--period", period, "--amount", str(paid)]
        await operator(premium_cli, *pay, "--reference", ref, "--by", "test")
        await summaries.until(lambda: summaries.latest[(line, period)].get("paid_idr") == paid)
        after_pay = summaries.latest[(line, period)]
        assert after_pay["outstanding_idr"] == after_pay["amount_idr"] - paid
        assert after_pay["amount_idr"] == latest[(line, period)]["amount_idr"]
        # the same reference again is one payment: nothing changes, nothing is published
        out = await operator(premium_cli, *pay, "--reference", ref)
        repeat_id = re.search(r"event ([0-9a-f-]{36})", out)
        assert repeat_id, out
        await until_settled(pool, [repeat_id.group(1)])
        await summaries.settled(pool)
        assert summaries.latest[(line, period)] == after_pay
        assert await pool.fetchval("SELECT count(*) FROM payments WHERE reference = $1", ref) == 1
        status = await operator(premium_cli, "status", "--period", period)
        owed = after_pay["amount_idr"]
        assert [line, period, idr(owed), idr(paid), idr(owed - paid)] in table_rows(status)

        # close the month (the operator's command); closing again changes nothing
        closing = await operator(premium_cli, "close", period)
        assert f"{period} closed in" in closing
        for ln in LINES:
            assert f"{ln} " in closing and idr(16_800 * billed_here[ln]) in closing
        again = await operator(premium_cli, "close", period)
        assert "already closed; nothing changed, nothing published" in again

        await summaries.until(
            lambda: all(summaries.latest[(ln, period)]["status"] == "closed" for ln in LINES)
        )
        closed = {ln: summaries.latest[(ln, period)] for ln in LINES}
        assert all(closed[ln]["amount_idr"] == 16_800 * billed_here[ln] for ln in LINES)

        # a back-dated exit: someone who had left before the cover started; the closed
        # month stays as it was, the correction goes to the next month
        leaver = next(
            (p, d)
            for p, d in people
            if d.outcome == "eligible" and d.funding_line == "PERWAKO-3-2023"
        )
        exit_decision = leaver[1].model_copy(
            update={
                "decision_id": str(uuid.uuid4()),
                "outcome": "exited",
                "cover_end": today_local().replace(day=1) - timedelta(days=1),
                "decided_at": now_local(),
                "nik": None,
            }
        )
        await publish(stack.bootstrap_servers, DECISIONS.name, [exit_decision])
        nxt = next_period(period)
        await summaries.until(
            lambda: (
                summaries.latest.get(("PERWAKO-3-2023", nxt), {}).get("adjustments_idr") == -16_800
            )
        )
        await summaries.settled(pool)
        adjusted = summaries.latest[("PERWAKO-3-2023", nxt)]
        assert adjusted["amount_idr"] == adjusted["jkk_idr"] + adjusted["jkm_idr"] - 16_800
        assert {ln: summaries.latest[(ln, period)] for ln in LINES} == closed  # untouched
        assert (await liability_by_line(pool, period)) == ledger
        # the operator sees the adjustment, the NIK masked: first 6 and last 2 digits
        nik = leaver[0].nik
        shown = await operator(premium_cli, "adjustments", nxt)
        assert f"{nik[:6]}********{nik[-2:]}" in shown and nik not in shown, shown
        assert "1 adjustments, total -Rp16.800" in shown, shown

        # the finance export (the command): totals equal the closed summary events
        target = tmp_path / "finance.xlsx"
        await operator(finance_app, "export", "--period", period, "--out", str(target))
        assert target.stat().st_mode & 0o077 == 0  # personal data: owner only
        wb = load_workbook(target)
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
        await summaries.consumer.stop()


async def replay_decisions(bootstrap: str) -> int:
    """Publish every decision on the topic again, exactly as it was (a redelivery)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(DECISIONS.name, p) for p in range(DECISIONS.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        sent = 0
        for r in await read_to_end(consumer, DECISIONS.name, DECISIONS.partitions):
            await producer.send(DECISIONS.name, r.value, key=r.key, headers=list(r.headers))
            sent += 1
        await producer.flush()
        return sent
    finally:
        await producer.stop()
        await consumer.stop()
