"""Faults a test can inject into the developer stack: PostgreSQL made unreachable.

`CuttableProxy` stands between a service and PostgreSQL: `cut()` closes every connection
and refuses new ones (as a network partition or a firewall change would), `open()` lets
them through again. Used by the outage tests of the relay and of notify's sender.
"""

from __future__ import annotations

import asyncio
import contextlib

from perlinsos_devruntime.embedded import free_port


class CuttableProxy:
    """A TCP proxy to PostgreSQL that can cut every connection and refuse new ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Close the listening socket (new connections are refused) and every connection."""
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def via(url: str, port: int) -> str:
    """`url` with its port replaced: the same database, reached through a proxy."""
    head, _, tail = url.partition("@")
    host_port, _, rest = tail.partition("/")
    return f"{head}@{host_port.rsplit(':', 1)[0]}:{port}/{rest}"
