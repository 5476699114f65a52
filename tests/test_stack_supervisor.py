"""`perlinsos up`'s supervisor on values: the restart backoff and what it reports.
(The supervisor at work, on a real stack, is the fault suite: `make test-faults`.)"""

from __future__ import annotations

import signal
import time

import pytest

from perlinsos_devruntime.stack import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    BACKOFF_RESET_AFTER_S,
    Backoff,
    StackEvent,
    _how_it_ended,
)


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
