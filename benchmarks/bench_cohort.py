"""The 24,300 cohort end to end (submission -> decision -> liability -> SMS handed over),
on the embedded stack, as `make run` does it; also at 10% trace sampling and untraced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

from perlinsos_devruntime.embedded import free_port, free_port_block

LINE = re.compile(
    r"decided or refused after ([\d.]+)s; every SMS handed over after ([\d.]+)s; "
    r"summaries equal the ledger after ([\d.]+)s"
)


def _once(size: int, sampler: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="perlinsos-bench-") as state:
        env = {**os.environ, "PERLINSOS_STATE_DIR": state, "COLUMNS": "200", **sampler}
        for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
            env.pop(var, None)
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "perlinsos_cli.main", "cohort", "--size", str(size),
             "--kafka-port", str(free_port()), "--pg-port", str(free_port()),
             "--http-port", str(free_port_block(4))],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"cohort run failed ({out.returncode}):\n{out.stdout[-3000:]}")
        wall = time.monotonic() - started
    match = LINE.search(" ".join(out.stdout.split()))
    if not match:
        raise RuntimeError("cohort run printed no timing line:\n" + out.stdout[-2000:])
    decided, sms, settled = (float(g) for g in match.groups())
    return {"decided_s": decided, "sms_s": sms, "settled_s": settled, "whole_command_s": wall}


def run(quick: bool = False) -> dict[str, object]:
    size = 2_000 if quick else 24_300
    modes = {
        "every_trace": {},
        "sampled_10pct": {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
        "untraced": {"OTEL_TRACES_SAMPLER": "always_off"},
    }
    results: dict[str, object] = {"size": size, "target_decided_s": 10}
    for name, env in modes.items():
        results[name] = _once(size, env)
    return results
