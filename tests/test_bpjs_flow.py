"""Closing the loop with BPJS Ketenagakerjaan, through the whole chain.

Real: the broker, PostgreSQL, registry, eligibility and premium as processes; the
`perlinsos bpjs ...` commands run in-process as an operator runs them. Twenty people
enrol on a line with eighteen places (two wait). The registration list is exported; BPJS
answers with KPJs for most, two refusals for existing membership, one other refusal, and
rows that cannot be used (an unknown NIK, a duplicate, an unreadable NIK). Expected: KPJs
stored and shown by `perlinsos registry audit`; the two members re-decided ineligible
(ALREADY_BPJS_MEMBER) and both waiting people promoted; one KPJ whose cover starts a day
earlier than the programme's re-decided from BPJS's date and billed from it. Then a bill
with one person too many, one missing, one wrong amount and one duplicate row: the report
lists exactly those four, and reconciling the same file again publishes the same event.
"""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from openpyxl import load_workbook
from typer.testing import CliRunner

from perlinsos_cli.bpjs.files import read_table
from perlinsos_cli.main import app
from perlinsos_devruntime.stack import Stack
from perlinsos_registry.testing import enrolment, nik
from perlinsos_shared.clock import period_of, today_local
from perlinsos_shared.envelope import CONTENT_TYPE, encode, make_event
from perlinsos_shared.events import EnrolmentSubmitted, FundingLine
from perlinsos_shared.settings import Settings, get_settings
from perlinsos_shared.signing import HEADER, default_keys_dir, signing_key
from perlinsos_shared.topics import DECISIONS, INTAKE, RECONCILIATIONS

pytestmark = [pytest.mark.flow, pytest.mark.timeout(900)]

LINE = FundingLine.PERWAKO_30_2025
PLACES, PEOPLE = 18, 20
RATE = 16_800


def nik_of(i: int) -> str:
    return nik(i)


def write_rules(folder: Path) -> Path:
    year = today_local().year
    (folder / LINE.value).mkdir(parents=True, exist_ok=True)
    (folder / LINE.value / "test.yaml").write_text(
        f"funding_line: {LINE.value}\nversion: test\nin_force_from: {year}-01-01\n"
        "occupations: [OJEK_DARING, BECAK, BOAT_PANCUNG]\n"
        "age: {min_years: 17, max_years_exclusive: 65}\n"
        f"funding: {{{year}: {{quota: {PLACES}, funded_months: [{', '.join(map(str, range(1, 13)))}]}}}}\n"
    )
    return folder


class Reader:
    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self.parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.seen: list[dict[str, Any]] = []

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.parts)
        await self.consumer.seek_to_beginning(*self.parts)

    async def until(self, what: str, done: Callable[[], bool], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached within {timeout:.0f}s: {what}")
            for records in (await self.consumer.getmany(timeout_ms=300)).values():
                self.seen += [orjson.loads(r.value) for r in records if r.value]


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.5)


async def enrol(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(1, PEOPLE + 1):
            data = enrolment(i, rid=f"BPJS-{i}", nik=nik_of(i), full_name=f"Peserta Uji {i}")
            value = encode(make_event("agency/DISHUB", EnrolmentSubmitted.model_validate(data)))
            signature = signing_key(default_keys_dir(), "DISHUB").sign(value)
            headers = [("content-type", CONTENT_TYPE.encode()), (HEADER, signature.encode())]
            await producer.send_and_wait(
                INTAKE.name, value, key=nik_of(i).encode(), headers=headers
            )
            await asyncio.sleep(0.05)  # enrolment order decides who waits
    finally:
        await producer.stop()


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


async def test_registration_answers_and_bill_close_the_loop(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = today_local()
    period = period_of(today)
    stack = Stack(settings, http_port_base=0)
    await asyncio.to_thread(stack.start_infrastructure)
    env = {
        "DATABASE_URL": stack.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "PERLINSOS_KAFKA_IDEMPOTENT": "true" if settings.kafka_idempotent else "false",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    decisions = Reader(stack.bootstrap_servers, DECISIONS.name, DECISIONS.partitions)
    reconciled = Reader(stack.bootstrap_servers, RECONCILIATIONS.name, RECONCILIATIONS.partitions)
    db = await asyncpg.connect(stack.database_url)
    try:
        await asyncio.to_thread(
            stack.start_services,
            ("registry", "eligibility", "premium"),
            timeout=240,
            extra_env={
                "PERLINSOS_ELIGIBILITY_RULES_DIR": str(write_rules(tmp_path / "rules")),
                "PERLINSOS_ELIGIBILITY_PROMOTE_INTERVAL_S": "2",
            },
        )
        await decisions.start()
        await reconciled.start()
        await enrol(stack.bootstrap_servers)
        await decisions.until("a decision for everyone", lambda: len(decisions.seen) >= PEOPLE)
        outcomes = [d["data"]["outcome"] for d in decisions.seen]
        assert (outcomes.count("eligible"), outcomes.count("waitlisted")) == (PLACES, 2)
        pid_of = {
            r["nik"]: r["participant_id"]
            for r in await db.fetch("SELECT nik, participant_id FROM registry.participants")
        }
        waiting = {
            d["data"]["participant_id"]
            for d in decisions.seen
            if d["data"]["outcome"] == "waitlisted"
        }

        async def ledger() -> dict[str, int]:
            rows = await db.fetch(
                "SELECT p.nik, l.jkk_idr + l.jkm_idr AS idr FROM premium.ledger l"
                " JOIN premium.people p USING (participant_id)"
                " WHERE l.funding_line = $1 AND l.period = $2",
                LINE.value,
                period,
            )
            return {r["nik"]: r["idr"] for r in rows}

        async def billed_all() -> bool:
            return len(await ledger()) == PLACES

        await wait_for("premium bills every holder", billed_all)

        # 1. the registration list: the eighteen holders, owner-only
        listing = tmp_path / "daftar.xlsx"
        await asyncio.to_thread(
            cli, "bpjs", "export-registrations", "--line", LINE.value, "--out", str(listing)
        )
        assert stat.S_IMODE(listing.stat().st_mode) == 0o600
        table = read_table(listing)
        listed = [cells["NIK"] for _, cells in table.rows]
        holders = sorted(n for n, pid in pid_of.items() if pid not in waiting)
        assert sorted(listed) == holders
        assert {cells["PROGRAM"] for _, cells in table.rows} == {"JKK+JKM"}

        # 2. BPJS's answer: KPJs, two members already, one other refusal, three bad rows
        refused, earlier = holders[1], holders[2]
        already_member, kpj_of = [holders[0], holders[3]], {}
        lines = ["NIK;No KPJ;Tanggal Mulai Kepesertaan;Alasan Penolakan"]
        bpjs_start = today - timedelta(days=1)
        for i, nik in enumerate(holders):
            if nik in already_member:
                lines.append(f"{nik};;;Sudah terdaftar sebagai peserta aktif (PU)")
            elif nik == refused:
                lines.append(f"{nik};;;Nama tidak sesuai dengan data Dukcapil")
            else:
                kpj_of[nik] = f"260{i:08d}"
                start = bpjs_start if nik == earlier else today
                lines.append(f"{nik};{kpj_of[nik]};{start.strftime('%d/%m/%Y')};")
        lines += [
            f"{nik_of(99)};26099999999;{today.strftime('%d/%m/%Y')};",  # unknown NIK
            f"{holders[5]};26088888888;{today.strftime('%d/%m/%Y')};",  # duplicate row
            "21710X;26077777777;01/01/2026;",  # unreadable NIK
        ]
        answer = tmp_path / "jawaban-bpjs.csv"
        answer.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = await asyncio.to_thread(cli, "bpjs", "import-memberships", str(answer))
        assert "REFUSED 1" in out
        result = read_table(answer.with_name("jawaban-bpjs.result.csv"))
        by_row = {n: (c["outcome"], c["registry"]) for n, c in result.rows}
        assert len(by_row) == len(lines) - 1
        assert [by_row[n] for n in sorted(by_row)][-3:] == [
            ("UNKNOWN_NIK", ""),
            ("DUPLICATE_ROW", ""),
            ("UNREADABLE_ROW", ""),
        ]
        assert sorted(o for o, _ in by_row.values()).count("KPJ_ASSIGNED") == len(kpj_of)
        assert {r for o, r in by_row.values() if o == "KPJ_ASSIGNED"} == {"stored"}

        stored = {
            r["nik"]: r["bpjs_kpj"]
            for r in await db.fetch("SELECT nik, bpjs_kpj FROM registry.participants")
            if r["bpjs_kpj"]
        }
        assert stored == kpj_of
        audit = await asyncio.to_thread(cli, "registry", "audit", earlier)
        assert kpj_of[earlier] in audit and "bpjs_answer" in audit

        # the members re-decided, both waiting promoted, BPJS's earlier start decided
        def redecided() -> bool:
            return len(decisions.seen) >= PEOPLE + 2 + 2 + 1

        await decisions.until("re-decisions and promotions", redecided)
        later = [d["data"] for d in decisions.seen[PEOPLE:]]
        ineligible = [d for d in later if d["outcome"] == "ineligible"]
        assert sorted(d["participant_id"] for d in ineligible) == sorted(
            pid_of[n] for n in already_member
        )
        assert all([r["code"] for r in d["reasons"]] == ["ALREADY_BPJS_MEMBER"] for d in ineligible)
        promoted = [d for d in later if d["outcome"] == "eligible" and d["promoted"]]
        assert sorted(d["participant_id"] for d in promoted) == sorted(waiting)
        moved = [d for d in later if d["participant_id"] == pid_of[earlier]]
        assert [(d["outcome"], d["cover_start"]) for d in moved] == [
            ("eligible", bpjs_start.isoformat())
        ]
        assert len(later) == 5

        async def covers_settled() -> bool:
            start = await db.fetchval(
                "SELECT cover_start FROM premium.covers WHERE participant_id = $1",
                pid_of[earlier],
            )
            now_billed = await ledger()
            return (
                start == bpjs_start
                and not (set(already_member) & set(now_billed))
                and len(now_billed) == PLACES
            )

        await wait_for("premium follows BPJS's answers", covers_settled)

        # 3. the bill: one too many, one missing, one wrong amount, one duplicate row
        owed = await ledger()
        covered = sorted(owed)
        missing, wrong, doubled = covered[0], covered[1], covered[2]
        too_many = already_member[0]  # BPJS bills a person the city does not cover
        bill = ["KPJ;NIK;Jumlah Bulan;Iuran"]
        for nik in covered:
            if nik == missing:
                continue
            ref = f"{kpj_of[nik]};" if nik in kpj_of else f";{nik}"
            amount = RATE + 1000 if nik == wrong else RATE
            bill.append(f"{ref};1;Rp{amount:,}".replace(",", "."))
            if nik == doubled:
                bill.append(f"{ref};1;{RATE}")
        bill.append(f";{too_many};1;{RATE}")
        invoice = tmp_path / "tagihan-bpjs.csv"
        invoice.write_text("\n".join(bill) + "\n", encoding="utf-8")
        report = tmp_path / "rekonsiliasi.xlsx"
        args = (
            "bpjs",
            "reconcile-invoice",
            str(invoice),
            "--line",
            LINE.value,
            "--period",
            period,
            "--out",
            str(report),
        )
        await asyncio.to_thread(cli, *args)
        assert stat.S_IMODE(report.stat().st_mode) == 0o600
        sheet = load_workbook(report, read_only=True)["Temuan"]
        found = sorted((str(r[3]), str(r[1])) for r in list(sheet.iter_rows(values_only=True))[1:])
        ref = {n: kpj_of.get(n, n) for n in covered}
        assert found == sorted(
            [
                ("BILLED_NOT_COVERED", too_many),
                ("COVERED_NOT_BILLED", missing),
                ("AMOUNT_DIFFERS", ref[wrong]),
                ("DUPLICATE_ROW", ref[doubled]),
            ]
        )
        await asyncio.to_thread(cli, *args)  # the same file again
        await reconciled.until("two publications", lambda: len(reconciled.seen) >= 2)
    finally:
        await db.close()
        await decisions.consumer.stop()
        await reconciled.consumer.stop()
        await asyncio.to_thread(stack.stop)
        get_settings.cache_clear()

    first, again = reconciled.seen
    assert first["id"] == again["id"] and first["data"] == again["data"]
    data = first["data"]
    assert data["counts"]["MATCHED"] == PLACES - 2  # all but the missing and the wrong amount
    assert {k: v for k, v in data["counts"].items() if v and k != "MATCHED"} == {
        "BILLED_NOT_COVERED": 1,
        "COVERED_NOT_BILLED": 1,
        "AMOUNT_DIFFERS": 1,
        "DUPLICATE_ROW": 1,
    }
    # 17 covered rows (one Rp1.000 too much), the duplicate row and the person too many
    assert data["billed_idr"] == RATE * (PLACES + 1) + 1000
    assert data["owed_idr"] == RATE * PLACES
    assert data["difference_idr"] == RATE + 1000
