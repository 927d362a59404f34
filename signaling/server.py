"""websockets (asyncio) adapter: pumps frames between sockets and the pure :class:`Router`.

One reader loop and one writer task per connection. The router decides everything (answers,
routing, limits, closes); this module only carries its actions out, schedules the login
deadline, and enforces the close grace period. The ops HTTP endpoints run on their own port,
in plain HTTP. With ``tls_cert`` and ``tls_key`` it serves ``wss://``
(:mod:`signaling.serveridentity`). With ``redis`` set it is one instance of several acting as
one server (:mod:`signaling.cluster`): the router's cross-instance actions go there.

    async with serve_signaling(Config(port=0, http_port=0, db=":memory:")) as server:
        url = server.url  # ws://127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.frames import CloseCode as WsCloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from signaling.admission import SocketTable, fit_to_fd_limit
from signaling.cluster import Cluster
from signaling.config import Config
from signaling.forwarded import Network, client_address, is_trusted, parse_networks
from signaling.handoff import Claim, Forward
from signaling.httpd import MAX_CLIENTS, OpsHttpServer
from signaling.keepalive import Keepalive, Liveness
from signaling.logs import Throttle
from signaling.messages import Error
from signaling.metrics import make_registry
from signaling.protocol import encode
from signaling.registry import Registry
from signaling.registry_open import open_registry
from signaling.router import Action, Disconnect, Router, address_group
from signaling.serveridentity import load_server_identity

log = logging.getLogger("signaling.server")

ACCEPT_ERROR_LOG_INTERVAL = 10.0  # seconds between two accept_failed lines
DROP_GRACE = 1.0  # s for a dropped (dead or deaf) peer's close frame before the socket goes
# The path HAProxy's WebSocket health check dials (deploy/haproxy.cfg), every second: from a
# trusted proxy, naming no client and never logging in, its disconnects are logged at debug.
HEALTH_CHECK_PATH = "/?health-check"
# Bytes waiting to be written to one peer past which it is dropped: far above what flow
# control lets our own frames queue (websockets' write limit plus a frame), reached only by a
# peer that makes us answer (pings) without reading.
WRITE_BUFFER_CAP = 1 << 20
_LoopHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]

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


class _Connection(ServerConnection):
    # Sockets from TCP accept to close (signaling.admission): the router counts a connection
    # only once its WebSocket handshake is done. Set on a per-server subclass, with the
    # trusted proxies: their sockets are counted per address only once the client's address
    # is known (the router's count, after the handshake; HAProxy keeps its own cap).
    limit: SocketTable[_Connection] | None = None
    proxies: tuple[Network, ...] = ()
    keepalive_sweep: Keepalive[_Connection] | None = None  # the server's one
    # wss://: the TLS handshake runs here, once the TCP connection is admitted. Left to the
    # event loop (ssl= on the listener), it ran before anything saw the socket: sockets that
    # never finished a handshake escaped every limit and could take all our descriptors.
    tls: ssl.SSLContext | None = None
    tls_handshake_timeout: float = 10.0

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        protocol.__class__ = _ErrorFirstProtocol  # same layout; overrides fail() only
        super().__init__(protocol, *args, **kwargs)
        self.liveness = Liveness(0.0)
        self._socket: asyncio.Transport | None = None  # the TCP connection, from accept
        self.started = False  # websockets has its transport (after TLS, with TLS)
        self._early: list[bytes] = []  # bytes decrypted before that (the HTTP request)
        self._upgrade_task: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs

    def _buffered(self) -> int:
        """Bytes waiting to be written to the peer: in the socket's buffer and, under TLS, in
        the TLS layer's (which stops handing them to the socket at its high-water mark)."""
        socket = self._socket.get_write_buffer_size() if self._socket is not None else 0
        return socket + (self.transport.get_write_buffer_size() if self.tls is not None else 0)

    def eof_received(self) -> None:
        if not self.started:  # the peer closed as TLS ended: nothing for websockets to start
            return  # (the transport closes; connection_lost releases the slot)
        super().eof_received()

    def abort_socket(self) -> None:
        """Drop the connection now, wherever it is (in its TLS handshake, say)."""
        if self._socket is not None:
            self._socket.abort()

    def data_received(self, data: bytes) -> None:
        self.liveness.heard = True  # any bytes prove the peer alive (signaling.keepalive)
        if not self.started:  # TLS is done, websockets not started yet: keep them for it
            self._early.append(data)
            return
        super().data_received(data)
        # Our own frames wait for the peer to read (flow control); the answers websockets
        # writes to its pings do not. A peer that sends pings and never reads would grow our
        # buffer without bound (hundreds of MB in seconds, before any login): drop it.
        if self._buffered() > WRITE_BUFFER_CAP:
            log.info("peer_not_reading", extra={"fields": {"buffered": WRITE_BUFFER_CAP}})
            self.transport.abort()

    def start_keepalive(self) -> None:
        """Called once the handshake is done: the server's sweep watches this connection
        instead of websockets' task per connection."""
        if self.keepalive_sweep is not None:
            self.keepalive_sweep.watch(self, self.liveness)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.liveness.blocked_since = self.loop.time()  # the peer is not reading, or slow

    def resume_writing(self) -> None:
        super().resume_writing()
        self.liveness.blocked_since = None

    def keepalive_ping(self) -> None:
        """Silent for the ping interval: ping (the pong counts as heard, like any bytes)."""
        if self.keepalive_task is not None:  # websockets cancels it when the socket closes
            self.keepalive_task.cancel()  # a ping still waiting to be written
        # Nobody waits for a pong: forget the earlier pings, or a peer that is heard by its
        # other bytes but never answers a ping would leave one behind per silence.
        for waiter, _sent_at in self.pending_pings.values():
            waiter.cancel()
        self.pending_pings.clear()
        self.keepalive_task = self.loop.create_task(self._ping_quietly())

    def keepalive_drop(self) -> None:
        """Silent, or not reading, for ping interval + timeout: close 1011 as websockets'
        keepalive does, without waiting for writes that a dead or deaf peer never drains;
        the socket is aborted after a short grace for the close frame."""
        if self.keepalive_task is not None:
            self.keepalive_task.cancel()  # a ping still waiting to be written
        if self.protocol.state is State.OPEN:
            self.protocol.fail(WsCloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.send_data()
        grace = min(DROP_GRACE, self.close_timeout or 0.0)
        self.loop.call_later(grace, _abort, self)

    async def _ping_quietly(self) -> None:
        with contextlib.suppress(ConnectionClosed, ConcurrencyError):
            await self.ping()  # the pong is not awaited: it is heard, as any bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The TCP connection was accepted: admit it, then (TLS first, if any) hand it to
        websockets."""
        self._socket = cast(asyncio.Transport, transport)
        if not self._admit(transport):
            self._socket.abort()  # no WebSocket yet: no error frame
        elif self.tls is None:
            self._start(self._socket)
        else:
            self._upgrade_task = self.loop.create_task(self._upgrade(self._socket))

    def _admit(self, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        net = address_group(ip) if ip else "?"
        if self.limit is None:
            return True
        if is_trusted(ip, self.proxies):
            net = f"proxied {id(self)}"  # one client of many behind the proxy: its own slot
        admitted, evicted = self.limit.admit(self, net)
        for old in evicted:  # the oldest handshakes in progress, dropped to make room
            old.abort_socket()
        return admitted

    async def _upgrade(self, tcp: asyncio.Transport) -> None:
        assert self.tls is not None
        try:
            tls = await self.loop.start_tls(
                tcp,
                self,
                self.tls,
                server_side=True,
                ssl_handshake_timeout=self.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
            # Failed, timed out or cut off: the loop may not call connection_lost for it.
            log.debug("tls_handshake_failed", extra={"fields": {"error": type(exc).__name__}})
            tcp.abort()
            self._forget_socket()
            return
        if tls is None or tls.is_closing():
            self._forget_socket()
            return
        self._start(tls)

    def _start(self, transport: asyncio.Transport) -> None:
        self.started = True
        super().connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def _forget_socket(self) -> None:
        if self.limit is not None:
            self.limit.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget_socket()
        if self.keepalive_sweep is not None:
            self.keepalive_sweep.forget(self)
        if self.started:
            super().connection_lost(exc)


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    queue: asyncio.Queue[str | tuple[int, str]] = field(default_factory=asyncio.Queue)
    timer: asyncio.TimerHandle | None = None


class SignalingServer:
    """A running server: ``port``, ``http_port``, ``url``, ``name``, ``identity`` (server id,
    certificate binding, host names), ``tls``, ``router``, ``metrics``."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self.requested = config
        config = fit_to_fd_limit(config, _open_files_limit(), http_clients=MAX_CLIENTS)
        self.config = config
        self.name = config.name
        # Logins are bound to the server id, our certificate's hash and our host names.
        self.identity, self.tls = load_server_identity(config)
        self.router = Router(config, registry, identity=self.identity, cluster=bool(config.redis))
        # The per-address limit counted on all the instances is the configured one: fitting
        # to our descriptors lowers only what this instance holds (the router's own count).
        per_ip = self.requested.max_connections_per_ip
        self.cluster = (
            Cluster(
                self.router,
                config.redis,
                self._apply,
                apply_claimed=self._apply_claimed,
                per_ip_limit=per_ip,
            )
            if config.redis
            else None
        )
        self.sockets: SocketTable[_Connection] = SocketTable.for_config(config)
        self.keepalive: Keepalive[_Connection] = Keepalive(
            config.ping_interval,
            config.ping_timeout,
            ping=_Connection.keepalive_ping,
            drop=_Connection.keepalive_drop,
        )
        self.metrics = make_registry(self.router, self.sockets, self.cluster)
        self.port = 0
        self.http_port = 0
        self._conns: dict[int, _Conn] = {}
        self._ws: Server | None = None
        self._http = OpsHttpServer(self.metrics, self._health)
        self._accept_errors = Throttle(ACCEPT_ERROR_LOG_INTERVAL)
        self._loop_handler: _LoopHandler | None = None
        self._proxies = parse_networks(config.trusted_proxies)

    @property
    def url(self) -> str:
        """``ws://`` or ``wss://`` and the listening address (loopback for a wildcard bind)."""
        host = self.config.host if self.config.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"{'wss' if self.tls is not None else 'ws'}://{host}:{self.port}"

    def _health(self) -> dict[str, object]:
        health: dict[str, object] = {
            "status": "ok",
            "connections": self.router.connections,
            "logged_in": self.router.logged_in,
        }
        if self.cluster is not None:  # "bus": down means other instances are unreachable
            health |= {"instance": self.cluster.instance, "bus": self.cluster.bus.up}
        return health

    async def start(self) -> None:
        c = self.config

        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
        self._log_lowered_limits()
        if self.cluster is not None:
            await self.cluster.start()

        tls_timeout = c.login_timeout  # a TLS handshake gets no longer than a login

        class Connection(_Connection):
            limit = self.sockets
            proxies = self._proxies
            keepalive_sweep = self.keepalive
            tls = self.tls
            tls_handshake_timeout = tls_timeout

        self._ws = await serve(
            self._handle,
            c.host,
            c.port,
            compression=None,  # envelopes are ciphertext; deflate would only cost memory
            max_size=c.max_frame_bytes,
            ping_interval=None,  # our own sweep: self.keepalive
            ping_timeout=None,
            close_timeout=c.close_timeout,
            open_timeout=c.login_timeout,
            create_connection=Connection,
            logger=logging.getLogger("signaling.websockets"),
        )
        self.keepalive.start()
        self.port = int(next(iter(self._ws.sockets)).getsockname()[1])
        self.http_port = await self._http.start(c.http_bind, c.http_port)
        _info(
            "listening",
            host=c.host,
            port=self.port,
            http_port=self.http_port,
            name=self.name,
            server_id=self.identity.server_id,
            tls=self.tls is not None,
        )

    async def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
            for socket in self.sockets.held():  # in their TLS handshake: websockets has none
                if not socket.started:
                    socket.abort_socket()
            closing = asyncio.ensure_future(self._ws.wait_closed())
            await asyncio.wait([closing], timeout=self.config.close_timeout + DROP_GRACE)
            if not closing.done():  # a peer that does not read never takes its close frame
                for ws in list(self._ws.all_connections):
                    _abort(ws)
                await closing
        self.keepalive.stop()
        await self._http.close()
        if self.cluster is not None:
            await self.cluster.stop()
        self.router.registry.close()
        if asyncio.get_running_loop().get_exception_handler() == self._on_loop_error:
            asyncio.get_running_loop().set_exception_handler(self._loop_handler)
        _info("stopped")

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio reports a failed accept() (EMFILE...) here, once per pending connection and
        with a traceback each time, then pauses that listener for a second. Log it once per
        interval instead, without a traceback; pass everything else on."""
        if context.get("message") == "socket.accept() out of system resource":
            held = self._accept_errors.allow()
            if held is not None:
                error = str(context.get("exception"))
                fields = {"error": error, "held_back": held, "retry_s": 1}
                log.warning("accept_failed", extra={"fields": fields})
            return
        if self._loop_handler is not None:
            self._loop_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _log_lowered_limits(self) -> None:
        asked, got = self.requested, self.config
        names = ("max_connections", "max_handshakes", "max_connections_per_ip")
        lowered = {n: getattr(got, n) for n in names if getattr(got, n) < getattr(asked, n)}
        if lowered:
            fields = {"open_files": _open_files_limit(), **lowered}
            log.warning("limits_lowered_to_fit_open_files", extra={"fields": fields})

    async def _handle(self, ws: ServerConnection) -> None:
        address = ws.remote_address
        peer = str(address[0]) if address else "?"
        request = ws.request
        forwarded = request.headers.get_all("X-Forwarded-For") if request is not None else []
        ip = client_address(peer, forwarded, self._proxies)  # behind a trusted proxy: its client
        # HAProxy's own health check: a trusted proxy's connection that names no client
        check = (
            request is not None
            and request.path == HEALTH_CHECK_PATH
            and not forwarded
            and is_trusted(peer, self._proxies)
        )
        net, admission = address_group(ip), None
        if self.cluster is not None and not check:  # the per-IP limit, on every instance
            admission = await self.cluster.admit(net)  # (not the proxy's checks: no round trip)
        full = admission is not None and admission.full
        sid, actions = self.router.connect(ip, invite=_invite_of(ws), cluster_full=full)
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
                if isinstance(ws, _Connection) and self.router.logged_in_session(sid):
                    self.sockets.logged_in(ws)  # no longer a handshake in progress
                # Frames that arrived together are otherwise routed without a pause: let the
                # writers drain, so a burst does not overflow a healthy reader's queue.
                await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            sent = ws.protocol.close_sent
            if sent is not None and sent.code in _TRANSPORT_ERRORS:
                self.router.stats.errors[_TRANSPORT_ERRORS[sent.code][0]] += 1
            left = self.router.disconnect(sid)
            if self.cluster is not None:
                if left is not None:
                    self.cluster.left(left)
                if admission is not None:
                    self.cluster.unadmit(admission)
            fields = {"session": sid, "code": ws.close_code}
            quiet = check and left is None  # a check that logged in is no check
            log.log(
                logging.DEBUG if quiet else logging.INFO, "disconnect", extra={"fields": fields}
            )
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
            if isinstance(action, Forward | Claim):
                if self.cluster is not None:
                    self.cluster.carry_out(action)
                continue
            if isinstance(action, Disconnect):
                conn.queue.put_nowait((action.code, action.reason))
                # A peer that stopped reading blocks the writer; drop it after the grace time.
                loop = asyncio.get_running_loop()
                loop.call_later(2 * self.config.close_timeout, _abort, conn.ws)
            else:
                conn.queue.put_nowait(action.frame)

    def _apply_claimed(self, actions: list[Action]) -> None:
        """Actions of a login the cluster finished: it is no longer a handshake in progress
        (signaling.admission), as one finished at once would be."""
        self._apply(actions)
        for action in actions:
            conn = self._conns.get(action.session)
            ws = conn.ws if conn is not None else None
            if isinstance(ws, _Connection) and self.router.logged_in_session(action.session):
                self.sockets.logged_in(ws)

    def _arm_deadline(self, sid: int, conn: _Conn, delay: float) -> None:
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(delay, self._on_deadline, sid, conn)

    def _on_deadline(self, sid: int, conn: _Conn) -> None:
        conn.timer = None
        actions, again = self.router.check_deadline(sid)
        self._apply(actions)
        if again is not None and sid in self._conns:
            self._arm_deadline(sid, conn, again)


def _open_files_limit() -> int | None:
    """The soft RLIMIT_NOFILE, or None when unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _invite_of(ws: ServerConnection) -> str | None:
    """The invitation token in the URL the client dialed (``/?invite=TOKEN``), if any."""
    request = ws.request
    if request is None:
        return None
    values = parse_qs(urlsplit(request.path).query).get("invite")
    return values[0] if values else None


def _abort(ws: ServerConnection) -> None:
    if ws.protocol.state is not State.CLOSED:
        ws.transport.abort()


@asynccontextmanager
async def serve_signaling(
    config: Config | None = None, *, registry: Registry | None = None
) -> AsyncIterator[SignalingServer]:
    """Run a server for the duration of the block (port 0 = ephemeral; loopback by default)."""
    config = config if config is not None else Config(port=0, http_port=0, db=":memory:")
    server = SignalingServer(config, registry if registry is not None else open_registry(config.db))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _info(event: str, **fields: object) -> None:
    log.info(event, extra={"fields": fields})
