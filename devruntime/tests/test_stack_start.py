"""What `Stack.start()` decides and records, on values: the settings the services get
against the embedded broker, and the start-up timeline (`logs/startup.log`)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from perlinsos_devruntime.stack import (
    EMBEDDED_SESSION_TIMEOUT_MS,
    ServiceProcess,
    Stack,
    Step,
    for_embedded_broker,
)
from perlinsos_shared.settings import Settings, settings_env


def test_against_the_embedded_broker_services_join_with_a_short_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS", raising=False)
    env = settings_env(for_embedded_broker(Settings()))
    assert env["PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS"] == str(EMBEDDED_SESSION_TIMEOUT_MS)
    assert env["PERLINSOS_KAFKA_IDEMPOTENT"] == "False"


def test_a_session_timeout_set_by_the_operator_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS", "7000")
    env = settings_env(for_embedded_broker(Settings()))
    assert env["PERLINSOS_CONSUMER_SESSION_TIMEOUT_MS"] == "7000"


def _line(at: float, message: str) -> str:
    return json.dumps({"time": datetime.fromtimestamp(at, UTC).isoformat(), "message": message})


def test_the_timeline_has_the_stacks_steps_and_each_services_own(tmp_path: Path) -> None:
    origin = 1_800_000_000.0
    log_path = tmp_path / "logs" / "eligibility.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text(
        "\n".join(
            [
                _line(origin - 50, "starting: database"),  # an earlier run: not this start
                _line(origin + 1.0, "starting: imports"),
                "not json: a library printed this",
                _line(origin + 2.5, "starting: waiting for its settings"),
                _line(origin + 3.0, "starting: database"),
                _line(origin + 3.5, "applied migrations"),
                _line(origin + 3.75, "starting: consumers joining their groups"),
                _line(origin + 4.75, "service ready"),
            ]
        )
        + "\n"
    )
    stack = Stack(Settings(PERLINSOS_STATE_DIR=tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with log_path.open("ab") as log_file:
        stack.services.append(ServiceProcess("eligibility", 1, proc, log_path, log_file))
        stack.timeline += [Step("broker", origin + 1.0, origin + 1.5)]
        steps = stack.write_timeline(origin)
    assert [(s.name, s.began - origin, s.ended - origin) for s in steps] == [
        ("broker", 1.0, 1.5),
        ("eligibility: imports", 1.0, 2.5),
        ("eligibility: waiting for its settings", 2.5, 3.0),
        ("eligibility: database", 3.0, 3.75),
        ("eligibility: consumers joining their groups", 3.75, 4.75),
    ]
    written = (tmp_path / "logs" / "startup.log").read_text().splitlines()
    assert written[0].split() == ["began", "ended", "step"]
    assert written[-1].split() == ["3.75", "4.75", "eligibility:", "consumers", "joining",
                                   "their", "groups"]  # fmt: skip
