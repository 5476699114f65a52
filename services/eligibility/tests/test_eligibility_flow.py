"""Quotas and the waitlist through a real broker and PostgreSQL, one and two instances."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from perlinsos_devruntime.settle import (
    bpjs_answer_sentinel,
    publish_sentinels,
    read_to_end,
    until_settled,
)
from perlinsos_devruntime.stack import Stack
from perlinsos_eligibility import cli
from perlinsos_eligibility.rules import load_rule_book
from perlinsos_shared.clock import BATAM_TZ, today_local
from perlinsos_shared.db import create_pool
from perlinsos_shared.envelope import encode, make_event
from perlinsos_shared.events import (
    Address,
    ExitReason,
    FundingLine,
    Occupation,
    ParticipantEnrolled,
    ParticipantExited,
)
from perlinsos_shared.settings import Settings, get_settings
from perlinsos_shared.topics import DECISIONS, PARTICIPANTS

pytestmark = pytest.mark.flow

LINES = {
    FundingLine.PERWAKO_3_2023: ["NELAYAN"],
    FundingLine.PERWAKO_30_2025: ["OJEK_DARING", "BECAK", "BOAT_PANCUNG"],
    FundingLine.PERWAKO_49_2025: ["KETUA_RT", "KETUA_RW", "KADER_POSYANDU", "KADER_SIAGA"],
}
OCCUPATION_OF = {
    FundingLine.PERWAKO_3_2023: Occupation.NELAYAN,
    FundingLine.PERWAKO_30_2025: Occupation.OJEK_DARING,
    FundingLine.PERWAKO_49_2025: Occupation.KETUA_RT,
}


def write_rules(folder: Path, quotas: dict[FundingLine, int]) -> Path:
    """Rule sets funding this whole year with small quotas."""
    year = today_local().year
    for line, quota in quotas.items():
        (folder / line.value).mkdir(parents=True, exist_ok=True)
        (folder / line.value / "test.yaml").write_text(
            f"funding_line: {line.value}\nversion: test\nin_force_from: {year}-01-01\n"
            f"occupations: [{', '.join(LINES[line])}]\n"
            "age: {min_years: 17, max_years_exclusive: 65}\n"
            f"funding: {{{year}: {{quota: {quota}, funded_months: [{', '.join(map(str, range(1, 13)))}]}}}}\n"
        )
    return folder


def enrolled(line: FundingLine, i: int, t0: datetime) -> ParticipantEnrolled:
    return ParticipantEnrolled(
        participant_id=str(uuid.uuid4()),
        nik=f"21710{i:011d}"[:16],
        full_name=f"Peserta {i}",
        birth_date=date(1980, 1, 1) + timedelta(days=i),
        sex="L",
        phone_e164="+6281234567890",
        address=Address(kecamatan="Sekupang", kelurahan="Tiban Lama", rt="001", rw="002"),
        occupation=OCCUPATION_OF[line],
        existing_bpjs_tk=False,
        agency="TEST",
        request_id=f"{line.value}-{i}",
        enrolled_at=t0 + timedelta(milliseconds=i),
    )


async def publish(bootstrap: str, events: list[ParticipantEnrolled | ParticipantExited]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        futures = [
            await producer.send(
                PARTICIPANTS.name,
                encode(make_event("test/registry", e, subject=e.participant_id)),
                key=e.participant_id.encode(),
            )
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Decisions:
    """Reads eligibility.decisions.v1 from the beginning."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.bootstrap_servers, group_id=None, auto_offset_reset="earliest"
        )
        self.seen: list[dict[str, Any]] = []

    async def __aenter__(self) -> Decisions:
        await self.consumer.start()
        parts = [TopicPartition(DECISIONS.name, p) for p in range(DECISIONS.partitions)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    def _keep(self, values: list[bytes]) -> None:
        self.seen.extend(json.loads(v)["data"] for v in values)

    async def until(self, n: int, timeout: float = 60) -> list[dict[str, Any]]:
        """At least `n` decisions, then everything else eligibility does with what it was
        given (a decision beyond `n` would be a bug: it is collected too). No sleep: a
        sentinel on every partition, applied, and the outbox published, then the topic
        read to its end."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < deadline:
            got = await self.consumer.getmany(timeout_ms=200)
            self._keep([r.value for records in got.values() for r in records])
        assert len(self.seen) >= n, f"{len(self.seen)} decisions, expected {n}"
        ids = await publish_sentinels(
            self.stack.bootstrap_servers,
            PARTICIPANTS.name,
            PARTICIPANTS.partitions,
            bpjs_answer_sentinel,
        )
        pool = await create_pool(self.stack.database_url, "eligibility", max_size=1)
        try:
            await until_settled(pool, ids, timeout=timeout)
        finally:
            await pool.close()
        records = await read_to_end(self.consumer, DECISIONS.name, DECISIONS.partitions)
        self._keep([r.value for r in records if r.value is not None])
        return self.seen


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    s = Stack(settings, http_port_base=0)
    s.start_infrastructure()
    yield s
    s.stop()


def of(decisions: list[dict[str, Any]], line: FundingLine) -> list[dict[str, Any]]:
    return [d for d in decisions if d["funding_line"] == line.value]


async def test_quota_waitlist_and_promotion_oldest_first(
    stack: Stack, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, k, j = 5, 4, 2
    line = FundingLine.PERWAKO_3_2023
    rules = write_rules(tmp_path / "rules", {line: n})
    stack.start_services(
        ("eligibility",), extra_env={"PERLINSOS_ELIGIBILITY_RULES_DIR": str(rules)}
    )
    t0 = datetime.now(BATAM_TZ)
    people = [enrolled(line, i, t0) for i in range(n + k)]
    async with Decisions(stack) as decisions:
        await publish(stack.bootstrap_servers, list(people))
        seen = await decisions.until(n + k)
        by_pid = {d["participant_id"]: d for d in seen}
        eligible = [d for d in seen if d["outcome"] == "eligible"]
        waitlisted = [d for d in seen if d["outcome"] == "waitlisted"]
        assert (len(seen), len(eligible), len(waitlisted)) == (n + k, n, k)
        assert all(d["cover_start"] == today_local().isoformat() for d in eligible)
        assert all([r["code"] for r in d["reasons"]] == ["QUOTA_FULL"] for d in waitlisted)
        year = today_local().year
        assert all(d["reasons"][0]["params"] == {"year": year, "quota": n} for d in waitlisted)
        assert all(d["rule_version"] == f"{line.value}@test" for d in seen)
        assert len({d["decision_id"] for d in seen}) == len(seen)
        # j exits free j places: the j oldest waiting are promoted, in arrival order
        leaving = [p for p in people if by_pid[p.participant_id]["outcome"] == "eligible"][:j]
        await publish(
            stack.bootstrap_servers,
            [
                ParticipantExited(
                    participant_id=p.participant_id,
                    agency="TEST",
                    request_id=f"exit-{p.request_id}",
                    reason=ExitReason.DECEASED if i == 0 else ExitReason.ROLE_ENDED,
                    effective_date=today_local(),
                )
                for i, p in enumerate(leaving)
            ],
        )
        seen = await decisions.until(n + k + 2 * j)
        later = seen[n + k :]
        exited = [d for d in later if d["outcome"] == "exited"]
        promoted = [d for d in later if d["outcome"] == "eligible"]
        assert len(later) == 2 * j
        assert {d["participant_id"] for d in exited} == {p.participant_id for p in leaving}
        assert all(d["cover_end"] == today_local().isoformat() for d in exited)
        # the exit reason travels on the decision (notify answers a death differently)
        reasons_of = {d["participant_id"]: d["exit_reason"] for d in exited}
        assert reasons_of == {
            leaving[0].participant_id: "DECEASED",
            **{p.participant_id: "ROLE_ENDED" for p in leaving[1:]},
        }
        # how to address the person comes along on every decision, promotions included
        assert all(d["sex"] == "L" and d["full_name"].startswith("Peserta") for d in later)
        assert all(d["promoted"] and d["cover_start"] for d in promoted)
        waiting_in_order = [
            p.participant_id
            for p in people
            if p.participant_id in {d["participant_id"] for d in waitlisted}
        ]
        assert sorted(d["participant_id"] for d in promoted) == sorted(waiting_in_order[:j])
    # the operator's view agrees: quota full, k - j waiting, counters consistent
    places = {p["funding_line"]: p for p in await cli.places(stack.database_url)}
    assert (places[line.value]["holders"], places[line.value]["waiting"]) == (n, k - j)
    assert places[line.value]["consistent"]
    # explain names the rules and the version; an unknown NIK is None. NIKs are found by
    # their keyed pseudonym: this process uses the stack's key (its state directory).
    monkeypatch.setenv("PERLINSOS_STATE_DIR", str(stack.state_dir.resolve()))
    get_settings.cache_clear()
    explained = await cli.explain(stack.database_url, people[0].nik)
    assert explained is not None and explained["rule_version"] == f"{line.value}@test"
    assert {c["rule"] for c in explained["checks"]} >= {"DOMICILE", "AGE", "QUOTA"}
    assert await cli.explain(stack.database_url, "3171000000000000") is None
    # `eligibility promote` (the operator's command) under rules with one place more: the
    # oldest still waiting is promoted, once; a second run promotes nobody
    one_more = write_rules(tmp_path / "one-more", {line: n + 1})
    monkeypatch.setenv("PERLINSOS_ELIGIBILITY_RULES_DIR", str(one_more))
    monkeypatch.setenv("DATABASE_URL", stack.database_url)
    for expected in (1, 0):
        ran = await asyncio.to_thread(CliRunner().invoke, cli.app, ["promote"])
        assert ran.exit_code == 0, ran.output
        assert f"{expected} decision(s) published" in ran.output, ran.output
    async with Decisions(stack) as decisions:
        seen = await decisions.until(n + k + 2 * j + 1)
    assert len(seen) == n + k + 2 * j + 1
    promotions = [d for d in seen if d["promoted"]]
    assert sorted(d["participant_id"] for d in promotions) == sorted(waiting_in_order[: j + 1])
    by_command = next(d for d in promotions if d["participant_id"] == waiting_in_order[j])
    assert by_command["outcome"] == "eligible"
    assert by_command["cover_start"] == today_local().isoformat()
    # a rule change raising the quota: reevaluate promotes the k - j - 1 still waiting,
    # and publishes nothing for the n + 1 unchanged
    raised = load_rule_book(write_rules(tmp_path / "raised", {line: n + k}))
    changed = await cli.reevaluate(stack.database_url, line, today_local(), raised)
    assert sorted((c.before, c.after) for c in changed) == [("waitlisted", "eligible")] * (
        k - j - 1
    )
    assert await cli.reevaluate(stack.database_url, line, today_local(), raised) == []


async def test_two_instances_never_over_fill_a_quota(
    stack: Stack, settings: Settings, tmp_path: Path
) -> None:
    quotas = {
        FundingLine.PERWAKO_3_2023: 150,
        FundingLine.PERWAKO_30_2025: 230,
        FundingLine.PERWAKO_49_2025: 90,
    }
    rules = write_rules(tmp_path / "rules", quotas)
    instances = stack.start_services(
        ("eligibility", "eligibility"),
        extra_env={
            "PERLINSOS_ELIGIBILITY_RULES_DIR": str(rules),
            "PERLINSOS_CONSUMER_MAX_RECORDS": "8",  # many small batches racing
        },
    )
    total = 0
    async with Decisions(stack) as decisions:
        # one round per line, each a burst over every partition: two instances race
        for round_no, (line, quota) in enumerate(quotas.items()):
            extra = 60 + round_no * 25
            t0 = datetime.now(BATAM_TZ)
            people = [enrolled(line, i, t0) for i in range(quota + extra)]
            await asyncio.gather(
                publish(stack.bootstrap_servers, list(people[::2])),
                publish(stack.bootstrap_servers, list(people[1::2])),
            )
            total += len(people)
            seen = of(await decisions.until(total), line)
            outcomes = [d["outcome"] for d in seen]
            assert len(seen) == quota + extra
            assert outcomes.count("eligible") == quota, (line, outcomes)
            assert outcomes.count("waitlisted") == extra
    places = {p["funding_line"]: p for p in await cli.places(stack.database_url)}
    for line, quota in quotas.items():
        assert places[line.value]["holders"] == quota and places[line.value]["consistent"]
    # the race happened: each instance applied part of the enrolments (its own /metrics)
    applied = [await applied_enrolments(svc.health_url) for svc in instances]
    assert all(n > 0 for n in applied), applied
    assert sum(applied) >= total, applied


async def applied_enrolments(health_url: str) -> float:
    """`perlinsos_messages_applied_total` for registry.participants.v1 on one instance."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{health_url}/metrics", timeout=10)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "perlinsos_messages_applied_total"
        and sample.labels.get("topic") == PARTICIPANTS.name
    )
