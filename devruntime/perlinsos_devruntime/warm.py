"""A service process started before its settings are known (`Stack.start`).

`python -m perlinsos_devruntime.warm <service>` imports what every service needs (about
two seconds of a core each) while the broker and PostgreSQL start, then reads the
service's environment, one JSON object on a line of its standard input, and runs the
service exactly as `python -m perlinsos_<service>` does. An empty standard input (the
stack gave up before the service's turn) ends it quietly.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
from datetime import UTC, datetime

# Imported ahead, then the service's own `app` module: none reads a setting the stack
# hands over (broker, database, state directory, ports) at import; what they read at
# import (premium's roll interval) comes from the environment `up` itself was given.
PRELOAD = (
    "aiokafka",
    "anyio._backends._asyncio",  # FastStream's task group, made when the app runs
    "asyncpg",
    "faststream.kafka",
    "httpx",
    "opentelemetry.instrumentation.asyncpg",  # instrument_clients, at set-up
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk.trace",
    "pydantic_settings",
    "perlinsos_shared.service",
    "perlinsos_shared.events",
)


def _mark(step: str) -> None:
    """A start-up step in the service's log, as the service's own lines say them (the
    stack's start-up timeline reads them)."""
    at = datetime.now(UTC).isoformat()
    print(json.dumps({"time": at, "message": f"starting: {step}"}), flush=True)


def main() -> None:
    name = sys.argv[1]
    _mark("imports")
    for module in (*PRELOAD, f"perlinsos_{name}.app"):
        importlib.import_module(module)
    _mark("waiting for its settings")
    line = sys.stdin.readline()
    if not line.strip():
        return
    _mark("set-up")
    os.environ.update(json.loads(line))
    sys.argv = [f"perlinsos_{name}"]
    runpy.run_module(f"perlinsos_{name}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
