"""The supervisor: restarts with capped, jittered backoff, logs once per change of state,
reports failing loops, recovers, stops; and the health server's computed answers."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request

import pytest

from perlinsos_shared.health import HealthServer, Readiness
from perlinsos_shared.supervisor import Supervisor


def fast(**kwargs: float) -> Supervisor:
    values = {"backoff_initial_s": 0.01, "backoff_max_s": 0.04, "healthy_after_s": 0.2}
    values.update(kwargs)
    return Supervisor("test", rng=random.Random(1), **values)


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    sup = Supervisor("test", backoff_initial_s=0.5, backoff_max_s=30.0, rng=random.Random(7))
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (50, 30.0)]:
        waits = [sup.backoff(failures) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered: instances do not restart in step


async def test_a_failing_loop_is_restarted_logged_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="perlinsos.supervisor")
    calls = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise ConnectionRefusedError("database away")
        healthy.set()
        await asyncio.Event().wait()  # runs until stopped

    sup = fast()
    loop = sup.start("relay", flaky)
    await wait_for(lambda: sup.failing() == ["relay"])
    await asyncio.wait_for(healthy.wait(), timeout=5)
    assert sup.failing() == ["relay"]  # not yet: it has to run well for a while
    await wait_for(lambda: sup.failing() == [])
    assert loop.restarts == 5
    assert loop.status == "running"
    await sup.stop()
    assert loop.status == "stopped"

    records = [r for r in caplog.records if r.name == "perlinsos.supervisor"]
    loud = [r for r in records if r.levelno >= logging.INFO]
    assert [r.getMessage() for r in loud] == [
        "background loop failed; starting it again with backoff",
        "background loop recovered",
    ]
    assert loud[0].exc_info is not None  # one traceback for the whole outage
    assert sum(1 for r in records if r.exc_info) == 1


async def test_a_different_failure_is_logged_once_more(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="perlinsos.supervisor")
    errors: list[Exception] = [OSError("a"), OSError("a"), ValueError("b"), ValueError("b")]

    async def failing() -> None:
        if errors:
            raise errors.pop(0)
        await asyncio.Event().wait()

    sup = fast()
    sup.start("loop", failing)
    await wait_for(lambda: not errors and sup.failing() == [])
    await sup.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "perlinsos.supervisor"]
    assert messages == [
        "background loop failed; starting it again with backoff",
        "background loop still failing, differently",
        "background loop recovered",
    ]


async def test_a_loop_that_fails_quickly_again_stays_failing() -> None:
    async def always() -> None:
        raise TimeoutError

    sup = fast(healthy_after_s=0.05)
    loop = sup.start("sender", always)
    await wait_for(lambda: loop.restarts >= 10)
    assert sup.failing() == ["sender"]
    assert loop.consecutive_failures >= 10
    await sup.stop()


async def test_stop_asks_politely_then_cancels_even_during_backoff() -> None:
    polite = asyncio.Event()
    stop_asked = asyncio.Event()

    async def relay() -> None:
        await stop_asked.wait()
        polite.set()

    async def stubborn() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        raise RuntimeError("always")

    sup = fast(backoff_initial_s=60, backoff_max_s=60)
    sup.start("relay", relay, on_stop=stop_asked.set)
    sup.start("stubborn", stubborn)
    sup.start("broken", broken)
    await wait_for(lambda: sup.failing() == ["broken"])
    started = time.monotonic()
    await sup.stop(timeout=5)
    assert time.monotonic() - started < 5  # the 60 s backoff did not hold the stop
    assert polite.is_set()
    assert {name: loop.status for name, loop in sup.loops.items()} == {
        "relay": "stopped",
        "stubborn": "stopped",
        "broken": "stopped",
    }


async def test_a_loop_that_returns_has_finished() -> None:
    async def once() -> None:
        return None

    sup = fast()
    loop = sup.start("once", once)
    await wait_for(lambda: loop.status == "finished")
    assert loop.restarts == 0 and sup.failing() == []
    await sup.stop()


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_readiness_is_computed_and_liveness_sees_a_wedged_loop() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = HealthServer("test", port, host="127.0.0.1", liveness_stall_s=1.0)
    state = Readiness(True)
    health.readiness = lambda: state
    await health.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert await asyncio.to_thread(_get, base + "/readyz") == (
            200,
            {"service": "test", "ready": True, "reasons": []},
        )
        state = Readiness(False, ["loop outbox-relay failing"])
        code, body = await asyncio.to_thread(_get, base + "/readyz")
        assert (code, body["reasons"]) == (503, ["loop outbox-relay failing"])
        assert (await asyncio.to_thread(_get, base + "/livez"))[0] == 200

        # the event loop wedged (a blocking call): the health thread still answers
        time.sleep(2.5)  # noqa: ASYNC251 - wedging the event loop is the point
        code, body = _get(base + "/livez")
        assert code == 503 and "stalled" in str(body["reason"])
        assert _get(base + "/readyz")[0] == 503
        await asyncio.sleep(1.2)  # ticking again
        assert (await asyncio.to_thread(_get, base + "/livez"))[0] == 200
    finally:
        await health.stop()


async def test_liveness_fails_when_start_up_overruns_its_deadline() -> None:
    """A start that hangs (before the service is ready) is seen: `/livez` fails once
    start-up has run past its deadline, naming the step it waits at; it passes again
    once start-up finishes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = HealthServer("test", port, host="127.0.0.1", startup_deadline_s=0.5)
    await health.start()
    base = f"http://127.0.0.1:{port}"
    try:
        health.starting("consumers joining their groups")
        while health.startup_overrun_s() == 0:
            assert (await asyncio.to_thread(_get, base + "/livez"))[0] == 200
            await asyncio.sleep(0.05)
        code, body = await asyncio.to_thread(_get, base + "/livez")
        assert code == 503
        assert (
            body["reason"]
            == "start-up not finished after 0.5s (at: consumers joining their groups)"
        )
        health.started()
        assert (await asyncio.to_thread(_get, base + "/livez"))[0] == 200
    finally:
        await health.stop()
