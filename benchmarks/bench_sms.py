"""SMS hand-over rate: messages the notify sender hands to the provider per second.

Starts the embedded PostgreSQL and the fake Twilio-wire-format server in a process of its
own, stores N decisions through notify's handler, then times the sender (claim, send over
HTTP, record with outbox events) from start until every message is recorded accepted.
No rate limit (SMS_RATE_LIMIT_PER_S=0). Also: the file sink (the embedded default), and
a short run with a rate limit to show it holds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg

from perlinsos_devruntime.embedded import EmbeddedPostgres, free_port
from perlinsos_notify.handlers import make_handler
from perlinsos_notify.providers import make_provider
from perlinsos_notify.sender import Sender
from perlinsos_shared.clock import now_local
from perlinsos_shared.consumer import Incoming
from perlinsos_shared.db import open_service_db
from perlinsos_shared.envelope import RawEnvelope, make_event
from perlinsos_shared.events import EligibilityDecided, Occupation
from perlinsos_shared.outbox import Outbox
from perlinsos_shared.settings import Settings

ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-token"


def _decisions(n: int) -> list[Incoming]:
    out = []
    for i in range(n):
        d = EligibilityDecided(
            decision_id=str(uuid.uuid4()),
            participant_id=str(uuid.uuid4()),
            outcome="eligible",
            cover_start=date(2026, 1, 5),
            rule_version="bench",
            occupation=Occupation.OJEK_DARING,
            agency="DISHUB",
            request_id=f"b-{i}",
            first_name="Budi",
            phone_e164=f"+62812{i:08d}",
            decided_at=now_local(),
        )
        env = RawEnvelope.model_validate_json(make_event("bench", d).model_dump_json())
        out.append(Incoming(envelope=env, key=d.participant_id, headers={}, record=None))  # type: ignore[arg-type]
    return out


async def _fill(pool: asyncpg.Pool, settings: Settings, n: int) -> None:
    await pool.execute("TRUNCATE messages, message_attempts, outbox")
    handler = make_handler(settings)
    items = _decisions(n)
    for start in range(0, n, 2000):
        async with pool.acquire() as conn, conn.transaction():
            outbox = Outbox()
            await handler(conn, items[start : start + 2000], outbox)
            await outbox.flush(conn)


async def _drain(pool: asyncpg.Pool, settings: Settings, n: int) -> dict[str, float]:
    sender = Sender.from_settings(
        settings, lambda: pool, make_provider(settings), asyncio.Event(), lambda: None
    )
    task = asyncio.create_task(sender.run())
    started = time.perf_counter()
    try:
        while True:
            done = await pool.fetchval("SELECT count(*) FROM messages WHERE status = 'accepted'")
            if done >= n:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return {
        "messages": n,
        "seconds": round(elapsed, 2),
        "handed_over_per_s": round(n / elapsed),
        "provider_calls": sender.handed_over,
    }


async def _bench(pg_url: str, fake_url: str, state: Path, quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 20_000
    twilio = Settings(
        sms_provider="twilio",
        twilio_api_base=fake_url,
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        twilio_from="PERLINSOS",
        sms_rate_limit_per_s=0,
        PERLINSOS_STATE_DIR=state,
    )
    pool = await open_service_db(pg_url, "notify", pool_size=6)
    try:
        results: dict[str, Any] = {}
        await _fill(pool, twilio, n)
        results["twilio_fake_no_rate_limit"] = {
            **await _drain(pool, twilio, n),
            "concurrency": twilio.sms_concurrency,
            "batch_size": twilio.sms_batch_size,
        }
        file_sink = twilio.model_copy(update={"sms_provider": "file"})
        await _fill(pool, file_sink, n)
        results["file_sink"] = await _drain(pool, file_sink, n)
        limited = twilio.model_copy(update={"sms_rate_limit_per_s": 100.0})
        await _fill(pool, limited, 300)
        results["twilio_fake_rate_limit_100_per_s"] = await _drain(pool, limited, 300)
        return results
    finally:
        await pool.close()


def run(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", port=free_port())
        pg.start()
        fake = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "perlinsos_devruntime.fake_twilio",
                "--port",
                str(free_port()),
                "--account-sid",
                ACCOUNT,
                "--auth-token",
                TOKEN,
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert fake.stdout is not None
            fake_url = json.loads(fake.stdout.readline())["url"]
            return asyncio.run(_bench(pg.admin_url, fake_url, Path(tmp) / "state", quick))
        finally:
            fake.terminate()
            fake.wait(10)
            pg.stop()
