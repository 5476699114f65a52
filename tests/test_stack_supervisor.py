"""`perlinsos up`'s supervisor on values: the restart backoff and what it reports, and
its check of a start that hangs (on a real process). (The supervisor at work on a real
stack is the fault suite: `make test-faults`.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perlinsos_devruntime import stack as stack_module
from perlinsos_devruntime.embedded import free_port
from perlinsos_devruntime.stack import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    BACKOFF_RESET_AFTER_S,
    Backoff,
    ServiceProcess,
    Stack,
    StackEvent,
    _how_it_ended,
)
from perlinsos_shared.settings import Settings


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(10)]
    assert BACKOFF_FIRST_S * 0.8 <= delays[0] <= BACKOFF_FIRST_S * 1.2
    assert BACKOFF_FIRST_S * 2 * 0.8 <= delays[1] <= BACKOFF_FIRST_S * 2 * 1.2
    assert all(d <= BACKOFF_MAX_S * 1.2 for d in delays)
    assert delays[-1] >= BACKOFF_MAX_S * 0.8


def test_backoff_starts_over_only_after_a_long_enough_healthy_run() -> None:
    backoff = Backoff()
    for _ in range(5):
        backoff.next_delay()
    backoff.healthy_for(BACKOFF_RESET_AFTER_S / 2)
    assert backoff.next_delay() >= BACKOFF_MAX_S * 0.8
    backoff.healthy_for(BACKOFF_RESET_AFTER_S)
    assert backoff.next_delay() <= BACKOFF_FIRST_S * 1.2


@pytest.mark.parametrize(
    ("code", "said"),
    [(-signal.SIGKILL, "killed by SIGKILL"), (1, "exit code 1"), (0, "exit code 0")],
)
def test_how_a_process_ended_is_said_plainly(code: int, said: str) -> None:
    assert _how_it_ended(code) == said


def test_an_event_is_one_line() -> None:
    event = StackEvent(time.time(), "notify", "exited", "killed by SIGKILL; restart in 0.5s")
    line = event.line()
    assert "notify: exited (killed by SIGKILL; restart in 0.5s)" in line
    assert "\n" not in line


def test_a_service_whose_start_hangs_is_killed_so_it_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real process whose start-up never finishes (its health server says so on /livez
    once the deadline has passed) is killed by the supervision round, which then starts
    it again like any exited service. Without the check it would wait unready forever."""
    monkeypatch.setattr(stack_module, "LIVENESS_EVERY_S", 0.05)
    port = free_port()
    script = (
        "import asyncio\n"
        "from perlinsos_shared.health import HealthServer\n"
        "async def main():\n"
        f"    h = HealthServer('stuck', {port}, host='127.0.0.1', startup_deadline_s=0.5)\n"
        "    await h.start()\n"
        "    h.starting('consumers joining their groups')\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    log_path = tmp_path / "stuck.log"
    log_file = log_path.open("ab")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=log_file, stderr=log_file)
    stack = Stack(Settings(PERLINSOS_STATE_DIR=tmp_path / "state"))
    svc = ServiceProcess("stuck", port, proc, log_path, log_file)
    stack.services.append(svc)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None:
            assert time.monotonic() < deadline, "a hanging start was left alone"
            stack._watch_services()
            time.sleep(0.05)
        assert proc.returncode == -signal.SIGKILL
        [stuck] = [e for e in stack.events if e.what == "start-up stuck"]
        assert stuck.part == "stuck"
        assert "start-up not finished after 0.5s (at: consumers joining their groups)" in (
            stuck.detail
        )
        stack._watch_services()  # the next round schedules its restart
        assert [e.what for e in stack.events][-1] == "exited"
        assert svc.restart_at is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()
