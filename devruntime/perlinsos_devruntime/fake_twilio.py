"""A fake SMS provider that speaks Twilio's Messages API wire format, for tests and
benchmarks. Not used in production.

    POST /2010-04-01/Accounts/{sid}/Messages.json   form To, From | MessagingServiceSid, Body
    GET  /2010-04-01/Accounts/{sid}/Messages.json   filters To, From, DateSent, DateSent>,
                                                    DateSent<; PageSize, Page

Basic auth is checked. Faults are scripted per POST, in arrival order, with `script(...)`:
`"ok"`, `"429"` (with `Retry-After`), `"500"`, `"503"`, `"slow"` (answers after a delay,
the message taken), `"slow-lost"` (a delay, then 500: not taken), `"drop-before"` (the
connection closes, nothing taken), `"drop-after"` (taken, then the connection closes
without an answer). Unscripted POSTs are accepted, after `latency_s`. Outages: `down`
(every POST 503) and `list_failing` (every list request 500), switched by the test.

Runs on its own event loop in a thread (`start()` / `stop()`), so a test process and a
notify subprocess can both talk to it; `python -m perlinsos_devruntime.fake_twilio --port N`
runs it as a process of its own (benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import operator
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11

from perlinsos_notify.render import is_gsm7


@dataclass(frozen=True)
class Fault:
    kind: str
    seconds: float = 0.0


def fault(kind: str, seconds: float = 0.0) -> Fault:
    return Fault(kind, seconds)


@dataclass
class Received:
    method: str
    path: str
    status: int | None  # None: no answer (dropped)
    fault: str


def refusal(form: dict[str, str]) -> dict[str, Any] | None:
    """Twilio's 400 answer to a message it would not take (no sender, a malformed `To`),
    else None."""
    to = form.get("To", "")
    if not (form.get("From") or form.get("MessagingServiceSid")):
        return {"code": 21603, "message": "A 'From' phone number is required.", "status": 400}
    if not (to.startswith("+") and to[1:].isdigit() and 8 <= len(to) <= 16):
        return {
            "code": 21211,
            "message": f"The 'To' number {to} is not a valid phone number.",
            "status": 400,
        }
    return None


@dataclass
class FakeTwilio:
    account_sid: str = "AC" + "0" * 32
    auth_token: str = "test-token"
    host: str = "127.0.0.1"
    port: int = 0
    latency_s: float = 0.0
    retry_after_s: float = 1.0
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    # outages, switched on and off by a test: every POST answers 503 while `down`; every
    # list request (GET) answers 500 while `list_failing`
    down: bool = False
    list_failing: bool = False

    def __post_init__(self) -> None:
        self._script: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- control --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def script(self, faults: Iterable[str | Fault]) -> None:
        """Answer the next POSTs this way, in order (then normally)."""
        with self._lock:
            for f in faults:
                self._script.append(f if isinstance(f, Fault) else Fault(f))

    def accepted_to(self, to: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["to"] == to]

    def env(self) -> dict[str, str]:
        """Settings that point a notify process at this fake."""
        return {
            "SMS_PROVIDER": "twilio",
            "TWILIO_API_BASE": self.url,
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FROM": "PERLINSOS",
        }

    def start(self) -> FakeTwilio:
        self._thread = threading.Thread(target=self._run, name="fake-twilio", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Twilio did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            done.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, self.host, self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def serve_forever(self) -> None:
        """Serve on the current event loop (a process of its own); prints the URL."""
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        print(json.dumps({"url": self.url}), flush=True)
        async with self._server:
            await self._server.serve_forever()

    # --- HTTP -------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is h11.CLOSED:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                answer = await self._answer(request, body)
                if answer is None:  # drop the connection without answering
                    writer.transport.abort()
                    return
                status, payload, extra = answer
                data = json.dumps(payload).encode()
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(data))),
                    *extra,
                ]
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=data)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # the fake is stopping: end quietly
            writer.transport.abort()
            return
        finally:
            if not writer.is_closing():
                writer.close()

    def _authorised(self, request: h11.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode())
        for name, value in request.headers:
            if name.lower() == b"authorization":
                return bool(value == b"Basic " + expected)
        return False

    async def _answer(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
        method = request.method.decode()
        split = urlsplit(request.target.decode())
        path = split.path
        expected = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if path != expected:
            self.requests.append(Received(method, path, 404, "none"))
            return 404, {"code": 20404, "message": "not found", "status": 404}, []
        if not self._authorised(request):
            self.requests.append(Received(method, path, 401, "none"))
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}, []
        if method == "GET" and self.list_failing:
            self.requests.append(Received(method, path, 500, "list-failing"))
            return 500, {"code": 20500, "message": "Internal error", "status": 500}, []
        if method == "GET":
            self.requests.append(Received(method, path, 200, "none"))
            return 200, self._list(dict(parse_qsl(split.query)), split.path), []
        if method != "POST":
            return 405, {"code": 20004, "message": "method not allowed", "status": 405}, []
        form = dict(parse_qsl(body.decode()))
        with self._lock:
            if self.down:
                step = Fault("503")
            else:
                step = self._script.popleft() if self._script else Fault("ok")
        received = Received(method, path, None, step.kind)
        self.requests.append(received)  # on arrival: a slow answer is still a request
        if self.latency_s and step.kind == "ok":
            await asyncio.sleep(self.latency_s)
        answer = await self._post(step, form)
        received.status = answer[0] if answer else None
        return answer

    async def _post(
        self, step: Fault, form: dict[str, str]
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
        kind = step.kind
        if kind == "429":
            retry = step.seconds or self.retry_after_s
            return (
                429,
                {"code": 20429, "message": "Too Many Requests", "status": 429},
                [("retry-after", f"{retry:g}")],
            )
        if kind in ("500", "503"):
            return int(kind), {"code": 20500, "message": "Internal error", "status": int(kind)}, []
        if kind == "drop-before":
            return None
        if kind == "slow-lost":
            await asyncio.sleep(step.seconds or 5.0)
            return 500, {"code": 20500, "message": "Internal error", "status": 500}, []
        refused = refusal(form)
        if refused is not None:
            return 400, refused, []
        message = self._take(form)
        if kind == "slow":
            await asyncio.sleep(step.seconds or 5.0)
        if kind == "drop-after":
            return None
        return 201, message, []

    def _take(self, form: dict[str, str]) -> dict[str, Any]:
        text = form.get("Body", "")
        per_part, single = (153, 160) if is_gsm7(text) else (67, 70)
        segments = 1 if len(text) <= single else math.ceil(len(text) / per_part)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        sid = "SM" + secrets.token_hex(16)
        message = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": form.get("To"),
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": text,
            "status": "accepted" if form.get("MessagingServiceSid") else "queued",
            "num_segments": str(segments),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": now,
            "date_updated": now,
            "date_sent": now,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self.messages.append(message)
        return message

    def _list(self, query: dict[str, str], path: str) -> dict[str, Any]:
        def day(m: dict[str, Any]) -> str | None:
            if not m.get("date_sent"):
                return None
            from email.utils import parsedate_to_datetime

            return parsedate_to_datetime(m["date_sent"]).date().isoformat()

        found = list(reversed(self.messages))  # newest first, as Twilio lists
        if "To" in query:
            found = [m for m in found if m["to"] == query["To"]]
        if "From" in query:
            found = [m for m in found if m["from"] == query["From"]]
        filters: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
            ("DateSent", operator.eq),
            ("DateSent>", operator.ge),
            ("DateSent<", operator.le),
        )
        for key, keep in filters:
            if key in query:
                value = query[key].lstrip("=")[:10]
                found = [m for m in found if (d := day(m)) is not None and keep(d, value)]
        size = max(1, min(1000, int(query.get("PageSize", 50))))
        page = int(query.get("Page", 0))
        chunk = found[page * size : (page + 1) * size]
        more = len(found) > (page + 1) * size
        base = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}
        from urllib.parse import urlencode

        def uri(p: int) -> str:
            return f"{path}?{urlencode({**base, 'PageSize': size, 'Page': p})}"

        return {
            "messages": chunk,
            "page": page,
            "page_size": size,
            "start": page * size,
            "end": page * size + max(0, len(chunk) - 1),
            "uri": uri(page),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if more else None,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perlinsos_devruntime.fake_twilio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--auth-token", default="test-token")
    args = parser.parse_args()
    fake = FakeTwilio(account_sid=args.account_sid, auth_token=args.auth_token, port=args.port)
    asyncio.run(fake.serve_forever())


if __name__ == "__main__":
    main()
