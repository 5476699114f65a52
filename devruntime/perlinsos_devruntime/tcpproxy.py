"""A TCP proxy that can be cut: what "the database is unreachable" looks like to a service.

`TcpProxy(target_port).start()` listens on a port of its own and forwards every
connection to the target. `cut()` closes every open connection (both sides see a reset
or an EOF mid-query) and stops listening, so new connections are refused; `restore()`
listens again on the same port. It runs its own event loop in a daemon thread, so a
synchronous test or the fault suite can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from perlinsos_devruntime.embedded import HOST, free_port

__all__ = ["TcpProxy"]

_CHUNK = 64 * 1024


@dataclass
class TcpProxy:
    target_port: int
    target_host: str = HOST
    port: int = field(default_factory=free_port)
    connections_cut: int = 0
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _server: asyncio.Server | None = field(default=None, init=False, repr=False)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set, init=False, repr=False)

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def start(self) -> TcpProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="perlinsos-tcpproxy", daemon=True)
        self._thread.start()
        ready.wait()
        self.restore()
        return self

    def _call(self, coro_fn: object) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro_fn, self._loop).result(10)  # type: ignore[arg-type]

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        self._call(self._listen())

    def cut(self) -> None:
        """Refuse new connections and break every open one."""
        self._call(self._cut())

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, HOST, self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            self.connections_cut += 1
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        if self._server is None:  # cut while connecting
            client_w.transport.abort()
            server_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )
        for w in (client_w, server_w):
            self._writers.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
