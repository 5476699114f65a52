"""SMS providers behind one small interface, chosen by settings (`SMS_PROVIDER`).

A provider does two things: hand one message over (`send`) and, for a send whose outcome
is unknown (the process died, the connection dropped), say whether it already has that
message (`find_sent`), so nothing is ever sent twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import certifi

from perlinsos_notify.delivery import Accepted, Refused, SendResult, Unknown
from perlinsos_shared.clock import now_local
from perlinsos_shared.settings import Settings

__all__ = [
    "Accepted",
    "FileProvider",
    "Outgoing",
    "Refused",
    "SendResult",
    "SmsProvider",
    "TwilioProvider",
    "Unknown",
    "make_provider",
]


@dataclass(frozen=True)
class Outgoing:
    message_id: str  # ours: stable per participant and decision
    to: str  # E.164
    text: str


class SmsProvider(Protocol):
    name: str

    async def send(self, message: Outgoing) -> SendResult: ...

    async def find_sent(self, message: Outgoing, since: datetime) -> Accepted | None:
        """The provider's record of this message if it took it at or after `since`."""
        ...

    async def close(self) -> None: ...


class FileProvider:
    """The embedded default: one JSON line per message handed over, flushed at once."""

    name = "file"

    def __init__(self, path: Path, sender_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sender_id = sender_id
        self._file = path.open("a", encoding="utf-8")

    async def send(self, message: Outgoing) -> SendResult:
        sid = f"file-{message.message_id}"
        line = {
            "id": message.message_id,
            "sid": sid,
            "from": self.sender_id,
            "to": message.to,
            "body": message.text,
            "at": now_local().isoformat(),
        }
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        return Accepted(sid, "accepted", 1)

    async def find_sent(self, message: Outgoing, since: datetime) -> Accepted | None:
        if not self.path.exists():
            return None
        with self.path.open(encoding="utf-8") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:  # a line cut short by a crash was never handed over
                    continue
                if line.get("id") == message.message_id:
                    return Accepted(line.get("sid") or f"file-{message.message_id}", "accepted", 1)
        return None

    async def close(self) -> None:
        self._file.close()


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _int(value: Any, default: int = 1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class TwilioProvider:
    """Twilio's Messages API: form POST with basic auth; JSON `sid`, `status`, `num_segments`.

    Errors are classified by whether the message may have been taken: an HTTP answer says
    for sure (429 / 5xx: not taken, retry; other 4xx: refused for good), a connection that
    never opened is safe to retry, and a request that went out without an answer is
    `Unknown` and reconciled through the message list before any resend.

    One aiohttp session with a pool of keep-alive connections. aiohttp rather than httpx:
    at a steady 200 SMS a second notify spent most of its CPU in httpx, httpcore, anyio
    and h11 (about 1.3 ms of CPU a request against the fake provider, and 0.2 ms more for
    the instrumentation's span of each request, a second span beside the sender's own
    `sms send`); aiohttp's parser is compiled and it made the same POST for about a
    quarter of that (docs/benchmarks.md). The session is made on first use, inside the
    event loop it belongs to.
    """

    name = "twilio"

    def __init__(
        self,
        *,
        api_base: str,
        account_sid: str,
        auth_token: str,
        from_: str | None,
        messaging_service_sid: str | None,
        timeout_s: float,
        max_connections: int = 32,
    ) -> None:
        if not (from_ or messaging_service_sid):
            raise ValueError("Twilio needs TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID")
        self._sender = (
            {"MessagingServiceSid": messaging_service_sid}
            if messaging_service_sid
            else {"From": from_ or ""}
        )
        self._timeout_s = timeout_s
        self._url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._base = api_base.rstrip("/")
        self._headers = {
            "Accept": "application/json",
            "Authorization": "Basic "
            + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode(),
        }
        self._max_connections = max(1, max_connections)
        self._session: aiohttp.ClientSession | None = None

    @property
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    limit_per_host=self._max_connections,
                    # the CA bundle httpx used (certifi), not whatever the image has
                    ssl=ssl.create_default_context(cafile=certifi.where()),
                ),
                # as before with httpx: each phase bounded, not the whole request (send
                # bounds that). `connect` covers waiting for a pooled connection too: the
                # request never went out then, so it is safe to retry
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._timeout_s, sock_read=self._timeout_s
                ),
                headers=self._headers,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, message: Outgoing) -> SendResult:
        form = urlencode({"To": message.to, "Body": message.text, **self._sender}).encode()
        try:
            async with asyncio.timeout(self._timeout_s * 1.5):
                async with self._client.post(self._url, data=form, headers=FORM) as resp:
                    status, body = resp.status, await resp.read()
                    retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return Refused(True, f"connect: {type(exc).__name__}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Unknown(f"no answer: {type(exc).__name__}")
        if status in (200, 201):
            try:
                answer = json.loads(body)
                return Accepted(
                    str(answer["sid"]),
                    str(answer.get("status") or "queued"),
                    _int(answer.get("num_segments")),
                )
            except (ValueError, KeyError, TypeError) as exc:
                # A success status with a body we cannot read: the message was probably
                # taken; let reconciliation find its sid rather than sending again.
                return Unknown(f"unreadable success answer: {type(exc).__name__}")
        code: str | None = None
        detail = ""
        try:
            err = json.loads(body)
            code = str(err.get("code")) if err.get("code") is not None else None
            detail = str(err.get("message") or "")[:200]
        except (ValueError, AttributeError):
            pass
        error = f"HTTP {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
        retryable = status == 429 or status >= 500
        # Credentials or account problems are not this message's fault: retry them, so a
        # fixed configuration lets the backlog go out.
        retryable = retryable or status in (401, 403)
        return Refused(
            retryable,
            error,
            http_status=status,
            retry_after_s=parse_retry_after(retry_after),
            provider_code=code,
        )

    async def find_sent(self, message: Outgoing, since: datetime) -> Accepted | None:
        """Look the message up in the provider's list: same recipient, same text, created
        at or after `since`. First with a DateSent filter, then (a queued message has no
        sent date yet) the recipient's most recent messages."""
        since_utc = since.astimezone(UTC)
        day = (since_utc - timedelta(days=1)).date().isoformat()
        for params in ({"To": message.to, "DateSent>": day}, {"To": message.to}):
            found = await self._search(message, since_utc, {**params, "PageSize": "100"})
            if found is not None:
                return found
        return None

    async def _search(
        self, message: Outgoing, since_utc: datetime, params: dict[str, str]
    ) -> Accepted | None:
        url: str | None = self._url
        query: dict[str, str] | None = params
        for _ in range(5):  # pages; a participant gets a handful of messages, not hundreds
            if url is None:
                break
            async with self._client.get(url, params=query, raise_for_status=True) as resp:
                page = json.loads(await resp.read())
            for item in page.get("messages", []):
                if item.get("to") != message.to or item.get("body") != message.text:
                    continue
                created = item.get("date_created")
                try:
                    when = parsedate_to_datetime(created) if created else None
                except (TypeError, ValueError):
                    when = None
                if when is not None and when < since_utc - timedelta(minutes=5):
                    continue  # an older message with the same text (clock skew allowed)
                return Accepted(
                    str(item["sid"]),
                    str(item.get("status") or "queued"),
                    _int(item.get("num_segments")),
                )
            next_page = page.get("next_page_uri")
            url = f"{self._base}{next_page}" if next_page else None
            query = None
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "file":
        return FileProvider(settings.sms_file, settings.sms_sender_id)
    if settings.sms_provider == "twilio":
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise ValueError("SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        return TwilioProvider(
            api_base=settings.twilio_api_base,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            from_=settings.twilio_from or None,
            messaging_service_sid=settings.twilio_messaging_service_sid or None,
            timeout_s=settings.sms_timeout_s,
            max_connections=max(1, settings.sms_concurrency),
        )
    raise ValueError(f"unknown SMS provider {settings.sms_provider!r}")
