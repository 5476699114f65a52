"""`perlinsos dlq list / show / redrive` on the running services (real broker, PostgreSQL,
services as processes).

Premium cannot bill two decisions (their funding line has no rate in its rate table: the
handler fails alone, deterministically, so they are dead-lettered); notify applies them
(one SMS each). A message that is not JSON is dead-lettered by both. The operator lists
and reads the dead letters (personal data masked), fixes the rate table, and redrives:
premium bills both, notify drops them (its inbox), nobody gets a second SMS. Redriving
again changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from perlinsos_cli.dlq import read_dead_letters
from perlinsos_cli.main import app
from perlinsos_devruntime.stack import Stack
from perlinsos_shared.clock import now_local, today_local
from perlinsos_shared.settings import Settings, get_settings
from perlinsos_shared.topics import DECISIONS

pytestmark = pytest.mark.flow

LINE = "PERWAKO-3-2023"  # its rates are taken away, then put back
OK_LINE = "PERWAKO-49-2025"


@pytest.fixture
def cli_env(stack: Stack, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
    monkeypatch.setenv("DATABASE_URL", stack.database_url)
    monkeypatch.setenv("PERLINSOS_KAFKA_IDEMPOTENT", str(settings.kafka_idempotent).lower())
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _decision(pid: str, line: str, n: int) -> dict[str, Any]:
    return {
        "decision_id": str(uuid.uuid4()),
        "participant_id": pid,
        "outcome": "eligible",
        "funding_line": line,
        "cover_start": today_local().replace(day=1).isoformat(),
        "rule_version": "test",
        "occupation": "NELAYAN",
        "agency": "DKP",
        "request_id": f"dlq-{n}",
        "first_name": "Sulastri",
        "phone_e164": f"+628127777{n:04d}",
        "decided_at": now_local().isoformat(),
        "nik": f"217101550990{n:04d}",
    }


async def _publish(bootstrap: str, decisions: list[dict[str, Any]], poison: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for data in decisions:
            envelope = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "perlinsos/eligibility",
                "type": "perlinsos.eligibility.decided.v1",
                "time": now_local().isoformat(),
                "datacontenttype": "application/json",
                "data": data,
            }
            await producer.send_and_wait(
                DECISIONS.name,
                json.dumps(envelope).encode(),
                key=data["participant_id"].encode(),
            )
        await producer.send_and_wait(DECISIONS.name, poison, key=b"poison")
    finally:
        await producer.stop()


async def _query(url: str, schema: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def _states(table: str) -> dict[str, int]:
    """The `state` column of `perlinsos dlq list`, counted."""
    found = re.findall(r"│ (dead|applied|not an event|redriven, not applied yet)\s+│", table)
    return dict(Counter(found))


def _wait(check: Callable[[], bool], what: str | Callable[[], str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, (
            f"timed out: {what if isinstance(what, str) else what()}"
        )
        time.sleep(0.3)


def test_dead_letters_listed_shown_masked_and_redriven_once(
    stack: Stack, settings: Settings, cli_env: None
) -> None:
    url = stack.database_url
    rates = asyncio.run(_query(url, "premium", "SELECT * FROM rates WHERE funding_line = $1", LINE))
    assert rates, "premium has rates for the line"
    asyncio.run(_query(url, "premium", "DELETE FROM rates WHERE funding_line = $1", LINE))

    stuck = [_decision(f"dlq-p{i}", LINE, i) for i in range(2)]
    fine = _decision("dlq-p9", OK_LINE, 9)
    asyncio.run(_publish(stack.bootstrap_servers, [*stuck, fine], b"not json at all"))

    def sms_count() -> int:
        path = settings.sms_file
        return len(path.read_text().splitlines()) if path.exists() else 0

    def dead_letters() -> list[Any]:
        s = settings.model_copy(update={"kafka_bootstrap_servers": stack.bootstrap_servers})
        return asyncio.run(read_dead_letters(s, [DECISIONS.dlq]))

    # premium: two failed decisions and the poison; notify: the poison only
    _wait(
        lambda: len(dead_letters()) == 4 and sms_count() == 3,
        lambda: (
            f"dead letters and SMS: {len(dead_letters())}, {sms_count()}: "
            + str([(d.headers.get("x-dlq-consumer"), d.error[:150]) for d in dead_letters()])
        ),
    )

    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", DECISIONS.name], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert "LookupError" in listed.output, listed.output  # no rate for the line
    assert _states(listed.output) == {"dead": 2, "not an event": 2}
    letters = dead_letters()
    failed = [d for d in letters if d.event_key() is not None]
    assert {d.headers["x-dlq-consumer"] for d in failed} == {"premium"}
    assert {d.original_topic for d in letters} == {DECISIONS.name}

    one = failed[0]
    shown = runner.invoke(app, ["dlq", "show", one.id], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    data = json.loads(one.value)["data"]
    assert f"{DECISIONS.name}:" in shown.output and "premium" in shown.output
    assert "LookupError" in shown.output and "personal data masked" in shown.output
    assert data["nik"] not in shown.output and data["phone_e164"] not in shown.output
    assert "Sulastri" not in shown.output and "S***" in shown.output
    raw = runner.invoke(app, ["dlq", "show", one.id, "--show-personal-data"])
    assert data["nik"] in raw.output and data["phone_e164"] in raw.output
    assert runner.invoke(app, ["dlq", "show", f"{DECISIONS.dlq}:0:99999"]).exit_code == 1

    # the cause fixed: the rates back; then the dead letters go round again
    asyncio.run(
        _query(
            url,
            "premium",
            "INSERT INTO rates SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],"
            " $4::date[], $5::date[])",
            [r["funding_line"] for r in rates],
            [r["component"] for r in rates],
            [r["amount_idr"] for r in rates],
            [r["valid_from"] for r in rates],
            [r["valid_to"] for r in rates],
        )
    )
    first = runner.invoke(app, ["dlq", "redrive", DECISIONS.name])
    assert first.exit_code == 0, first.output
    assert "redriven: 2" in first.output and "not an event" in first.output

    def billed() -> int:
        rows = asyncio.run(
            _query(
                url,
                "premium",
                "SELECT count(*) AS n FROM ledger WHERE participant_id = ANY($1::text[])",
                [d["participant_id"] for d in stuck],
            )
        )
        return int(rows[0]["n"])

    _wait(lambda: billed() == 2, "premium billing the redriven decisions")
    listed = runner.invoke(app, ["dlq", "list", DECISIONS.dlq], env={"COLUMNS": "250"})
    assert _states(listed.output) == {"applied": 2, "not an event": 2}

    # redriving twice (all, then one by id) changes nothing
    again = runner.invoke(app, ["dlq", "redrive", DECISIONS.name])
    assert "redriven: 0" in again.output and "applied already: 2" in again.output
    by_id = runner.invoke(app, ["dlq", "redrive", DECISIONS.name, "--id", one.id])
    assert "redriven: 0" in by_id.output
    time.sleep(3)
    assert billed() == 2 and sms_count() == 3  # notify dropped the copies: no second SMS
    assert len(dead_letters()) == 4  # and nothing failed again
    summary = asyncio.run(
        _query(
            url,
            "premium",
            "SELECT participants FROM summaries WHERE funding_line = $1 AND period = $2",
            LINE,
            f"{today_local():%Y-%m}",
        )
    )
    assert summary and summary[0]["participants"] == 2
