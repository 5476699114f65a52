"""The fake Twilio-wire provider as a process of its own that notes when each SMS arrived.

    python -m benchmarks.provider --out FILE [--port N]

Prints `{"url": ...}` once listening (as the fake does), then appends one line per message
it accepts: the `To` number and the wall-clock time (`time.time()`) it was handed over.
The latency benchmark gives every submission a phone number of its own, so a line names
the submission it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import IO, Any

from perlinsos_devruntime.fake_twilio import FakeTwilio

ACCOUNT = "AC" + "c" * 32
TOKEN = "bench-token"


class TimedTwilio(FakeTwilio):
    out: IO[str] | None = None

    def _take(self, form: dict[str, str]) -> dict[str, Any]:
        message = super()._take(form)
        self.messages.clear()  # nothing lists them here; keep memory flat
        if self.out is not None:
            self.out.write(f"{form.get('To', '')}\t{time.time():.6f}\n")
        return message


def env(url: str) -> dict[str, str]:
    """Settings that point notify at this provider."""
    return {
        "SMS_PROVIDER": "twilio",
        "TWILIO_API_BASE": url,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM": "PERLINSOS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.provider")
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = TimedTwilio(account_sid=ACCOUNT, auth_token=TOKEN, port=args.port)
    with open(args.out, "a", buffering=1, encoding="utf-8") as out:
        fake.out = out
        asyncio.run(fake.serve_forever())


if __name__ == "__main__":
    main()
