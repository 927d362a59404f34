"""websockets (asyncio) adapter: pumps frames between sockets and the pure :class:`Router`.

One reader loop and one writer task per connection. The router decides everything (answers,
routing, limits, closes); this module only carries its actions out, schedules the login
deadline, and enforces the close grace period. The ops HTTP endpoints run on their own port.

    async with serve_signaling(Config(port=0, http_port=0, db=":memory:")) as server:
        url = f"ws://127.0.0.1:{server.port}"
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode as WsCloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from signaling.config import Config
from signaling.httpd import OpsHttpServer
from signaling.messages import Error
from signaling.metrics import make_registry
from signaling.protocol import encode
from signaling.registry import MemoryRegistry, Registry, SQLiteRegistry
from signaling.router import Action, Disconnect, Router, address_group

log = logging.getLogger("signaling.server")

# Failures detected inside the WebSocket layer, answered with an error frame before the close.
_TRANSPORT_ERRORS: dict[int, tuple[str, str]] = {
    WsCloseCode.MESSAGE_TOO_BIG: ("too_large", "frame over the size limit"),
    WsCloseCode.INVALID_DATA: ("bad_frame", "text frame is not valid UTF-8"),
    WsCloseCode.PROTOCOL_ERROR: ("bad_frame", "WebSocket protocol violation"),
}


class _ErrorFirstProtocol(ServerProtocol):
    """Sends the ``error`` frame that explains a transport-level failure before closing."""

    def fail(self, code: int, reason: str = "") -> None:
        known = _TRANSPORT_ERRORS.get(int(code))
        if known is not None and self.state is State.OPEN:
            self.send_text(encode(Error(known[0], known[1])).encode("ascii"))
        super().fail(code, reason)


class _SocketLimit:
    """Sockets per address from TCP accept to close, handshake included: the router counts a
    connection only once its WebSocket handshake is done, so without this one address could
    hold any number of half-open sockets (file descriptors) until ``open_timeout``."""

    def __init__(self, per_ip: int) -> None:
        self.per_ip = per_ip
        self.counts: Counter[str] = Counter()

    def admit(self, net: str) -> bool:
        if self.counts[net] >= self.per_ip:
            return False
        self.counts[net] += 1
        return True

    def release(self, net: str) -> None:
        self.counts[net] -= 1
        if self.counts[net] <= 0:
            del self.counts[net]


class _Connection(ServerConnection):
    limit: _SocketLimit | None = None  # set on a per-server subclass
    _net: str | None = None

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        protocol.__class__ = _ErrorFirstProtocol  # same layout; overrides fail() only
        super().__init__(protocol, *args, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        net = address_group(str(peer[0])) if isinstance(peer, tuple) and peer else "?"
        if self.limit is not None and not self.limit.admit(net):
            cast(asyncio.Transport, transport).abort()  # no WebSocket yet: no error frame
            return
        self._net = net

    def connection_lost(self, exc: Exception | None) -> None:
        if self.limit is not None and self._net is not None:
            self.limit.release(self._net)
            self._net = None
        super().connection_lost(exc)


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    queue: asyncio.Queue[str | tuple[int, str]] = field(default_factory=asyncio.Queue)
    timer: asyncio.TimerHandle | None = None


class SignalingServer:
    """A running server: ``port``, ``http_port``, ``name``, ``router``, ``metrics``."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self.config = config
        self.name = config.name
        self.router = Router(config, registry)
        self.metrics = make_registry(self.router)
        self.port = 0
        self.http_port = 0
        self._conns: dict[int, _Conn] = {}
        self._ws: Server | None = None
        # Twice the per-IP limit, so that past the limit itself a client still gets the
        # too_many_connections error frame; only a flood of sockets is cut off silently.
        self._sockets = _SocketLimit(2 * config.max_connections_per_ip)
        self._http = OpsHttpServer(self.metrics, self._health)

    def _health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "connections": self.router.connections,
            "logged_in": self.router.logged_in,
        }

    async def start(self) -> None:
        c = self.config

        class Connection(_Connection):
            limit = self._sockets

        self._ws = await serve(
            self._handle,
            c.host,
            c.port,
            compression=None,  # envelopes are ciphertext; deflate would only cost memory
            max_size=c.max_frame_bytes,
            ping_interval=c.ping_interval,
            ping_timeout=c.ping_timeout,
            close_timeout=c.close_timeout,
            open_timeout=c.login_timeout,
            create_connection=Connection,
            logger=logging.getLogger("signaling.websockets"),
        )
        self.port = int(next(iter(self._ws.sockets)).getsockname()[1])
        self.http_port = await self._http.start(c.http_bind, c.http_port)
        _info("listening", host=c.host, port=self.port, http_port=self.http_port, name=self.name)

    async def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        await self._http.close()
        self.router.registry.close()
        _info("stopped")

    async def _handle(self, ws: ServerConnection) -> None:
        address = ws.remote_address
        ip = str(address[0]) if address else "?"
        sid, actions = self.router.connect(ip)
        conn = _Conn(ws)
        self._conns[sid] = conn
        writer = asyncio.create_task(self._write_loop(sid, conn))
        self._apply(actions)
        self._arm_deadline(sid, conn, self.config.login_timeout)
        try:
            async for message in ws:
                try:
                    actions = self.router.receive(sid, message)
                except Exception:
                    log.exception("router failed", extra={"fields": {"session": sid}})
                    actions = self.router.fail(sid)
                self._apply(actions)
                # Frames that arrived together are otherwise routed without a pause: let the
                # writers drain, so a burst does not overflow a healthy reader's queue.
                await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            sent = ws.protocol.close_sent
            if sent is not None and sent.code in _TRANSPORT_ERRORS:
                self.router.stats.errors[_TRANSPORT_ERRORS[sent.code][0]] += 1
            self.router.disconnect(sid)
            _info("disconnect", session=sid, code=ws.close_code)
            if conn.timer is not None:
                conn.timer.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            del self._conns[sid]

    async def _write_loop(self, sid: int, conn: _Conn) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if isinstance(item, str):
                    await conn.ws.send(item)
                    self.router.written(sid)
                else:
                    await conn.ws.close(*item)
                    return
        except ConnectionClosed:
            return

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            conn = self._conns.get(action.session)
            if conn is None:
                continue
            if isinstance(action, Disconnect):
                conn.queue.put_nowait((action.code, action.reason))
                # A peer that stopped reading blocks the writer; drop it after the grace time.
                loop = asyncio.get_running_loop()
                loop.call_later(2 * self.config.close_timeout, _abort, conn.ws)
            else:
                conn.queue.put_nowait(action.frame)

    def _arm_deadline(self, sid: int, conn: _Conn, delay: float) -> None:
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(delay, self._on_deadline, sid, conn)

    def _on_deadline(self, sid: int, conn: _Conn) -> None:
        conn.timer = None
        actions, again = self.router.check_deadline(sid)
        self._apply(actions)
        if again is not None and sid in self._conns:
            self._arm_deadline(sid, conn, again)


def _abort(ws: ServerConnection) -> None:
    if ws.protocol.state is not State.CLOSED:
        ws.transport.abort()


def open_registry(config: Config) -> Registry:
    return MemoryRegistry() if config.db == "" else SQLiteRegistry(config.db)


@asynccontextmanager
async def serve_signaling(
    config: Config | None = None, *, registry: Registry | None = None
) -> AsyncIterator[SignalingServer]:
    """Run a server for the duration of the block (port 0 = ephemeral; loopback by default)."""
    config = config if config is not None else Config(port=0, http_port=0, db=":memory:")
    server = SignalingServer(config, registry if registry is not None else open_registry(config))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _info(event: str, **fields: object) -> None:
    log.info(event, extra={"fields": fields})
