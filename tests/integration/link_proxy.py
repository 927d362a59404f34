"""A TCP proxy in front of the signaling server that can cut, black-hole and restore the link.

- :meth:`LinkProxy.reset` aborts every connection through it (a reset by the network); new
  connections still go through.
- :meth:`LinkProxy.stall` silently stops forwarding: every current connection becomes a black
  hole for good (bytes are read and thrown away, nothing is closed, as behind a dead NAT or a
  pulled cable), and so does every new connection until :meth:`resume`.
- :meth:`LinkProxy.resume`: new connections are forwarded again (the black-holed ones stay
  dead: their endpoints must notice it, by keepalive).
"""

from __future__ import annotations

import asyncio
import contextlib


class LinkProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0  # connections accepted, in all
        self._server: asyncio.Server | None = None
        self._stalled = False
        self._links: list[_Link] = []

    async def start(self, port: int = 0) -> LinkProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def reset(self) -> None:
        for link in self._links:
            link.abort()
        self._links.clear()

    def stall(self) -> None:
        self._stalled = True
        for link in self._links:
            link.black_hole = True

    def resume(self) -> None:
        self._stalled = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        link.black_hole = self._stalled
        if link.black_hole:  # never forwarded: read and drop until the client gives up
            await link.swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        link.up = up_writer
        self._links.append(link)
        pumps: list[asyncio.Future[None]] = [
            asyncio.ensure_future(link.pump(reader, up_writer)),
            asyncio.ensure_future(link.pump(up_reader, writer)),
        ]
        link.pumps = pumps
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        if not link.black_hole:
            link.abort()


class _Link:
    def __init__(self, down: asyncio.StreamWriter) -> None:
        self.down = down
        self.up: asyncio.StreamWriter | None = None
        self.black_hole = False
        self.pumps: list[asyncio.Future[None]] = []

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65_536):
                if self.black_hole:
                    continue  # swallowed: nothing reaches the other side, nothing is closed
                writer.write(data)
                await writer.drain()
        if self.black_hole:
            await asyncio.Event().wait()  # stay open: a black hole never closes anything

    async def swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65_536):
                pass

    def abort(self) -> None:
        for task in self.pumps:
            task.cancel()
        for w in (self.down, self.up):
            if w is not None and w.transport is not None:
                w.transport.abort()
