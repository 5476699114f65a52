"""The Twilio adapter against the fake Twilio-wire-format server, and the file sink."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from perlinsos_devruntime.embedded import free_port
from perlinsos_devruntime.fake_twilio import FakeTwilio, fault
from perlinsos_notify.delivery import Accepted, Refused, Unknown
from perlinsos_notify.providers import FileProvider, Outgoing, TwilioProvider


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as f:
        yield f


def twilio(fake: FakeTwilio, *, timeout_s: float = 2.0, token: str | None = None) -> TwilioProvider:
    return TwilioProvider(
        api_base=fake.url,
        account_sid=fake.account_sid,
        auth_token=token or fake.auth_token,
        from_="PERLINSOS",
        messaging_service_sid=None,
        timeout_s=timeout_s,
    )


MSG = Outgoing("sms-d1", "+6281234567890", "Perlinsos Batam: Budi, Anda peserta BPJS")


async def test_accepted_message_is_parsed_and_listed(fake: FakeTwilio) -> None:
    p = twilio(fake)
    try:
        res = await p.send(MSG)
        assert isinstance(res, Accepted)
        assert res.provider_message_id.startswith("SM") and res.segments == 1
        assert res.status == "queued"
        [taken] = fake.messages
        assert (taken["to"], taken["from"], taken["body"]) == (MSG.to, "PERLINSOS", MSG.text)
        since = datetime.now(UTC) - timedelta(seconds=5)
        found = await p.find_sent(MSG, since)
        assert found is not None and found.provider_message_id == res.provider_message_id
        other = Outgoing("sms-d2", MSG.to, "another text")
        assert await p.find_sent(other, since) is None
        assert await p.find_sent(MSG, datetime.now(UTC) + timedelta(hours=1)) is None
    finally:
        await p.close()


async def test_refusals_say_whether_to_retry(fake: FakeTwilio) -> None:
    fake.script([fault("429", 2.5), "500", "503"])
    p = twilio(fake)
    try:
        r429 = await p.send(MSG)
        assert isinstance(r429, Refused) and r429.retryable and r429.retry_after_s == 2.5
        for _ in range(2):
            r5xx = await p.send(MSG)
            assert isinstance(r5xx, Refused) and r5xx.retryable and r5xx.http_status in (500, 503)
        invalid = await p.send(Outgoing("sms-d3", "+62", "x"))
        assert isinstance(invalid, Refused) and not invalid.retryable
        assert invalid.provider_code == "21211"
        assert fake.messages == []
    finally:
        await p.close()


@pytest.mark.parametrize("kind", ["slow", "slow-lost", "drop-after", "drop-before"])
async def test_no_answer_is_unknown(fake: FakeTwilio, kind: str) -> None:
    fake.script([fault(kind, 1.0)])
    p = twilio(fake, timeout_s=0.3)
    try:
        res = await p.send(MSG)
        assert isinstance(res, Unknown), res
        # whether the provider took it is only known from its list
        since = datetime.now(UTC) - timedelta(seconds=5)
        found = await p.find_sent(MSG, since)
        assert (found is not None) == (kind in ("slow", "drop-after"))
    finally:
        await p.close()


async def test_wrong_credentials_and_no_server_are_retryable(fake: FakeTwilio) -> None:
    p = twilio(fake, token="wrong")
    try:
        res = await p.send(MSG)
        assert isinstance(res, Refused) and res.retryable and res.http_status == 401
    finally:
        await p.close()
    nowhere = TwilioProvider(
        api_base=f"http://127.0.0.1:{free_port()}",
        account_sid="AC1",
        auth_token="t",
        from_=None,
        messaging_service_sid="MG1",
        timeout_s=1.0,
    )
    try:
        res = await nowhere.send(MSG)
        assert isinstance(res, Refused) and res.retryable and res.http_status is None
    finally:
        await nowhere.close()


async def test_file_provider_appends_and_finds(tmp_path: Path) -> None:
    p = FileProvider(tmp_path / "sms" / "outbox.jsonl", "PERLINSOS")
    try:
        res = await p.send(MSG)
        assert isinstance(res, Accepted)
        found = await p.find_sent(MSG, datetime.now(UTC))
        assert found == res
        assert await p.find_sent(Outgoing("sms-other", MSG.to, MSG.text), datetime.now(UTC)) is None
    finally:
        await p.close()
    assert len((tmp_path / "sms" / "outbox.jsonl").read_text().splitlines()) == 1
