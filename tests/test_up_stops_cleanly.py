"""`perlinsos up` runs until Ctrl-C or SIGTERM and leaves no process or port behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from perlinsos_devruntime.embedded import free_port, free_port_block, port_is_listening

pytestmark = pytest.mark.flow


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("how", ["SIGTERM to the process group", "Ctrl-C to the process"])
def test_up_stops_everything(tmp_path: Path, how: str) -> None:
    kafka_port, pg_port, http_port = free_port(), free_port(), free_port_block(4)
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env["PERLINSOS_STATE_DIR"] = str(tmp_path / "state")
    env["COLUMNS"] = "200"
    up = subprocess.Popen(
        [sys.executable, "-m", "perlinsos_cli.main", "up", "--kafka-port", str(kafka_port),
         "--pg-port", str(pg_port), "--http-port", str(http_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        stack_file = tmp_path / "state" / "stack.json"
        deadline = time.monotonic() + 90
        while not stack_file.exists():
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            assert time.monotonic() < deadline, "perlinsos up did not become ready"
            time.sleep(0.2)
        children = _descendants(up.pid)
        assert len(children) >= 6, [c.cmdline() for c in children]  # broker, pg, 4 services
        assert port_is_listening("127.0.0.1", kafka_port)
        assert port_is_listening("127.0.0.1", pg_port)
        if how.startswith("SIGTERM"):
            os.killpg(up.pid, signal.SIGTERM)
        else:
            up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        _gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [p.pid for p in alive]
        for port in (kafka_port, pg_port, http_port, http_port + 1, http_port + 2, http_port + 3):
            assert not port_is_listening("127.0.0.1", port), port
        assert not stack_file.exists()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
