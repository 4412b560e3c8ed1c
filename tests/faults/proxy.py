"""A TCP proxy a fault test controls, between the services and PostgreSQL.

It runs its own asyncio loop in a thread, so the bytes keep moving whatever the test's loop does.
- `cut()`: every connection is closed at once and new ones are refused (nothing listens), like a
  database host that went away;
- `hang()`: connections stay open and new ones are accepted, but no byte moves in either direction
  (what is in flight is held, as a network partition holds it), like a database that stops answering;
- `restore()`: listening again, and held bytes flow on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

CHUNK = 64 * 1024


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.state = "open"
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._flowing: asyncio.Event | None = None

    # control, from any thread

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def hang(self) -> None:
        self._call(self._hang())

    def restore(self) -> None:
        self._call(self._restore())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    # in the proxy's loop

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        with socket.socket() as probe:
            probe.bind((self.host, 0))
            self.port = probe.getsockname()[1]
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)

    async def _cut(self) -> None:
        self.state = "cut"
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self._connections):
            connection.abort()
        self._connections.clear()

    async def _hang(self) -> None:
        assert self._flowing is not None
        self.state = "hang"
        self._flowing.clear()

    async def _restore(self) -> None:
        assert self._flowing is not None
        if self._server is None:
            await self._listen()
        self.state = "open"
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if self.state == "cut":
            writer.transport.abort()
            return
        self.accepted += 1
        connection = _Connection(client=writer)
        self._connections.add(connection)
        try:
            await self._flowing.wait()  # hung: accepted, but nothing reaches the database
            if connection not in self._connections:  # cut meanwhile
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            connection.upstream = up_writer
            connection.tasks = [asyncio.create_task(self._pipe(reader, up_writer)),
                                asyncio.create_task(self._pipe(up_reader, writer))]
            await asyncio.gather(*connection.tasks, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            connection.abort()
            self._connections.discard(connection)

    async def _pipe(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await source.read(CHUNK):
                await self._flowing.wait()  # hung: held here, and nothing more is read
                target.write(data)
                await target.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                target.transport.abort()
