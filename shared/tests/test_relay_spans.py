"""The outbox relay's own statements are not instrumented: they belong to no message, and
the sampler dropped each of them as an orphan anyway (no database, no broker here)."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from perlinsos_shared.outbox import OutboxRelay


class _Conn:
    def __init__(self, relay: list[OutboxRelay], seen: list[bool]) -> None:
        self._relay, self._seen = relay, seen

    async def fetchval(self, query: str, *args: Any) -> Any:
        self._seen.append(is_instrumentation_enabled())
        if "pg_try_advisory_lock" in query:
            return True
        self._relay[0].stop()  # the first round's probe: nothing pending, and stop
        return False

    async def execute(self, query: str, *args: Any) -> str:
        self._seen.append(is_instrumentation_enabled())
        return "SELECT 1"


class _Pool:
    def __init__(self, conn: _Conn) -> None:
        self._conn = conn

    def acquire(self) -> Any:
        conn = self._conn

        class _Acquired:
            async def __aenter__(self) -> _Conn:
                return conn

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Acquired()


async def _publish(*args: Any) -> Any:
    raise AssertionError("nothing to publish")


def test_the_relay_statements_are_not_instrumented() -> None:
    relay: list[OutboxRelay] = []
    seen: list[bool] = []
    relay.append(OutboxRelay(_Pool(_Conn(relay, seen)), "t", _publish))  # type: ignore[arg-type]

    async def run() -> bool:
        await relay[0].run()
        return is_instrumentation_enabled()  # only the relay's own statements

    assert asyncio.run(run()) is True
    assert len(seen) >= 3 and not any(seen)  # lock, probe, unlock
