"""The fake Twilio-wire provider as a process of its own that notes when each SMS arrived.

    python -m benchmarks.provider --out FILE [--port N]

Prints `{"url": ...}` once listening (as the fake does), then appends one line per message
it accepts: the `To` number and the wall-clock time (`time.time()`) it was handed over.
The latency benchmark gives every submission a phone number of its own, so a line names
the submission it answers.

It speaks the wire the tests' fake speaks (`perlinsos_devruntime.fake_twilio`: the same
path, Basic auth, form fields, the fake's own checks (`refusal`) and answer (`_take`)),
served by aiohttp's compiled HTTP parser instead of the fake's h11. The fake parses in
pure Python, for scripted faults a test can step through; here it would be a second
load on the two cores the system is measured on: at 1,000 SMS a second the h11 fake took
0.4 of a core, this one 0.26-0.28 (docs/benchmarks.md). Twilio's servers are not on the machine that sends to them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from typing import IO

import uvloop
from aiohttp import web

from perlinsos_devruntime.fake_twilio import FakeTwilio, refusal

ACCOUNT = "AC" + "c" * 32
TOKEN = "bench-token"
_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
_AUTH = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()


def app(out: IO[str]) -> web.Application:
    """The provider: accepts every valid message, notes `To` and the time it arrived."""
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN)

    async def messages(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != _AUTH:
            return web.json_response(
                {"code": 20003, "message": "Authenticate", "status": 401}, status=401
            )
        form = {k: str(v) for k, v in (await request.post()).items()}
        refused = refusal(form)
        if refused is not None:
            return web.json_response(refused, status=400)
        message = fake._take(form)
        fake.messages.clear()  # nothing lists them here; keep memory flat
        out.write(f"{form['To']}\t{time.time():.6f}\n")
        return web.json_response(message, status=201)

    application = web.Application()
    application.router.add_post(_PATH, messages)
    return application


def env(url: str) -> dict[str, str]:
    """Settings that point notify at this provider."""
    return {
        "SMS_PROVIDER": "twilio",
        "TWILIO_API_BASE": url,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM": "PERLINSOS",
    }


async def serve(out: IO[str], port: int) -> None:
    runner = web.AppRunner(app(out), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"url": f"http://127.0.0.1:{bound}"}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.provider")
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with open(args.out, "a", buffering=1, encoding="utf-8") as out:
        uvloop.run(serve(out, args.port))


if __name__ == "__main__":
    main()
