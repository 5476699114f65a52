"""A warm service process (`perlinsos_devruntime.warm`): imports ahead, then runs the
service with the environment it is handed, or ends quietly when handed nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _warm(service: str, stdin: bytes, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env["PERLINSOS_STATE_DIR"] = str(tmp_path / "unused")
    return subprocess.run(
        [sys.executable, "-m", "perlinsos_devruntime.warm", service],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_a_warm_process_handed_nothing_ends_quietly(tmp_path: Path) -> None:
    done = _warm("eligibility", b"", tmp_path)
    assert done.returncode == 0
    assert done.stderr == b""
    # only its start-up steps, as JSON lines the stack's start-up timeline reads
    steps = [json.loads(line)["message"] for line in done.stdout.splitlines()]
    assert steps == ["starting: imports", "starting: waiting for its settings"]
    assert not (tmp_path / "unused").exists()  # the service never ran


def test_a_warm_process_runs_the_service_with_the_environment_handed_to_it(
    tmp_path: Path,
) -> None:
    # no DATABASE_URL: the service itself refuses to start, which shows it ran, and
    # with the state directory handed over rather than the one it was started with
    state = tmp_path / "handed"
    handed = {"PERLINSOS_STATE_DIR": str(state), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = _warm("eligibility", json.dumps(handed).encode() + b"\n", tmp_path)
    assert done.returncode != 0
    assert b"DATABASE_URL is not set" in done.stderr + done.stdout
    assert (state / "traces").is_dir()  # its trace store, in the state directory handed
    assert not (tmp_path / "unused").exists()
