"""Liveness, readiness and metrics over plain HTTP for orchestrators and `perlinsos up`.

The server answers from a thread of its own, so it can say that the event loop is stuck
instead of just not answering:

- `GET /livez` fails (503) only when the process is wedged: the event loop has not run
  its heartbeat (a tick every second) for `liveness_stall_s`, or start-up has not
  finished within `startup_deadline_s` (the server starts first thing, so a start that
  hangs, e.g. a consumer group join that never completes, is seen too; the reason names
  the step it waits at). An orchestrator restarts such a process. A database or broker
  that is away does not fail `/livez` once started: restarting would not bring them back.
- `GET /readyz` is computed on every request by the service's `readiness` function
  (failing supervised loops, consumers that have not polled for a while, startup not
  finished) and fails too while the event loop is wedged. 503 takes the instance out of
  load balancing and shows an operator that its work is stuck; it never restarts it.
- `GET /metrics`: Prometheus text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("perlinsos.health")

HEARTBEAT_S = 1.0


@dataclass
class Readiness:
    """Whether the service is ready, and if not, why (short reasons, nothing personal)."""

    ready: bool
    reasons: list[str] = field(default_factory=list)


class HealthServer:
    """`GET /livez`, `GET /readyz`, `GET /metrics` on the given port (none: not served)."""

    def __init__(
        self,
        service: str,
        port: int | None,
        host: str = "0.0.0.0",
        *,
        liveness_stall_s: float = 30.0,
        startup_deadline_s: float = 180.0,
    ) -> None:
        self.service = service
        self.port = port
        self.host = host
        self.liveness_stall_s = liveness_stall_s
        self.startup_deadline_s = startup_deadline_s
        # what start-up is doing now; None once it has finished
        self.startup_step: str | None = "initialising"
        self._startup_began = time.monotonic()
        self.readiness: Callable[[], Readiness] = lambda: Readiness(False, ["starting"])
        self.metrics_text: Callable[[], bytes] = lambda: b""
        self._last_tick = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    def starting(self, step: str) -> None:
        """Start-up has reached `step` (a short phrase, shown when it overruns)."""
        self.startup_step = step

    def started(self) -> None:
        self.startup_step = None

    def startup_overrun_s(self) -> float:
        """Seconds start-up has run past its deadline (0 when within it or finished)."""
        if self.startup_step is None:
            return 0.0
        return max(0.0, time.monotonic() - self._startup_began - self.startup_deadline_s)

    async def start(self) -> None:
        self._last_tick = time.monotonic()
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="health-heartbeat")
        if self.port is None or self._server is not None:
            return
        self._server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name=f"health-{self.service}",
            daemon=True,
        )
        self._thread.start()

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    async def _beat(self) -> None:
        said = False
        while True:
            self._last_tick = time.monotonic()
            if not said and self.startup_overrun_s() > 0:
                said = True  # once: /livez now fails and the process is restarted
                log.error(
                    "start-up not finished within its deadline; /livez fails from now on",
                    extra={
                        "service": self.service,
                        "deadline_s": self.startup_deadline_s,
                        "step": self.startup_step,
                    },
                )
            await asyncio.sleep(HEARTBEAT_S)

    def loop_stalled_s(self) -> float:
        """Seconds since the event loop last ran its heartbeat (beyond one beat)."""
        return max(0.0, time.monotonic() - self._last_tick - HEARTBEAT_S)

    def livez(self) -> tuple[bool, dict[str, Any]]:
        stalled = self.loop_stalled_s()
        body: dict[str, Any] = {"service": self.service, "live": stalled < self.liveness_stall_s}
        if not body["live"]:
            body["reason"] = f"event loop stalled for {stalled:.0f}s"
        elif self.startup_overrun_s() > 0:
            body["live"] = False
            body["reason"] = (
                f"start-up not finished after {self.startup_deadline_s:g}s"
                f" (at: {self.startup_step})"
            )
        return body["live"], body

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        live, _ = self.livez()
        state = self.readiness() if live else Readiness(False, ["event loop stalled"])
        body = {"service": self.service, "ready": state.ready, "reasons": state.reasons}
        return state.ready, body

    def route(self, path: str) -> tuple[int, str, bytes]:
        if path.startswith("/livez"):
            ok, body = self.livez()
            return (200 if ok else 503), "application/json", json.dumps(body).encode()
        if path.startswith("/readyz"):
            ok, body = self.readyz()
            return (200 if ok else 503), "application/json", json.dumps(body).encode()
        if path.startswith("/metrics"):
            return 200, "text/plain; version=0.0.4", self.metrics_text()
        return 404, "text/plain", b"not found"


def _handler_for(health: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, ctype, body = health.route(self.path)
            except Exception as exc:  # a readiness check that broke is not ready
                status, ctype = 503, "application/json"
                error = {"service": health.service, "error": type(exc).__name__}
                body = json.dumps(error).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds are not news

    return Handler
