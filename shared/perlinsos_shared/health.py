"""Liveness, readiness and metrics over plain HTTP for orchestrators and `perlinsos up`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable


class HealthServer:
    """`GET /livez`, `GET /readyz`, `GET /metrics` on the given port (none: not served)."""

    def __init__(self, service: str, port: int | None, host: str = "0.0.0.0") -> None:
        self.service = service
        self.port = port
        self.host = host
        self.ready = False
        self.metrics_text: Callable[[], bytes] = lambda: b""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.port is None or self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode(errors="replace").split()
            path = parts[1] if len(parts) > 1 else "/"
            status, ctype, body = self._route(path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _route(self, path: str) -> tuple[str, str, bytes]:
        if path.startswith("/livez"):
            return "200 OK", "application/json", json.dumps({"service": self.service}).encode()
        if path.startswith("/readyz"):
            body = json.dumps({"service": self.service, "ready": self.ready}).encode()
            return ("200 OK" if self.ready else "503 Service Unavailable"), "application/json", body
        if path.startswith("/metrics"):
            return "200 OK", "text/plain; version=0.0.4", self.metrics_text()
        return "404 Not Found", "text/plain", b"not found"
