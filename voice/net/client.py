"""websockets client of the signaling server: log in, send and receive opaque envelopes, TURN.

The wire format and the bytes to sign come from :mod:`signaling.protocol`, so both sides agree
by construction. Signing is a plain callable, so this module needs no key classes:

    client = await SignalingClient.connect(url, "alice", key.verify_key.encode(), key.sign_raw)
    bob_key = await client.lookup("bob")               # key directory (trust on first use)
    await client.send("bob", sealed_envelope)          # waits for the server's "sent"
    delivery = await client.receive()                   # Delivery(from_user, body)

``from_user`` is the sender's login as the server states it: authenticated to the server, but
the server itself is untrusted, so callers still authenticate the body end to end.

Transport: ``wss://`` verifies the server's certificate against the system CAs, or only against
``ca_file`` when given (:class:`ServerCertificateRejected` otherwise). Plain ``ws://`` is allowed
only to a loopback host (``localhost``, 127.0.0.0/8, ::1) unless ``insecure=True``
(:class:`InsecureServerUrl`). The login (v2) signs the host of the URL and the RFC 5929
tls-server-end-point hash of the certificate the server presented (empty over ``ws://``), so a
server that relays another server's challenge gets a signature that server refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from signaling.errors import FrameError
from signaling.messages import (
    Challenge,
    Deliver,
    Error,
    Key,
    Login,
    Lookup,
    Send,
    Sent,
    ServerMessage,
    Turn,
    TurnCredentials,
    Welcome,
)
from signaling.protocol import encode, login_message, parse_server_frame
from signaling.wire import b64encode
from voice.errors import (
    LoginRefused,
    RateLimited,
    RecipientOffline,
    RequestRefused,
    ServerCertificateRejected,
    ServerNameChanged,
    SessionReplaced,
    SignalingClosed,
    SignalingProtocolError,
    SignalingUnreachable,
    TurnUnavailable,
    UnknownUser,
)
from voice.net.transport import channel_binding, client_tls_context, server_address

log = logging.getLogger("voice.net.client")

Signer = Callable[[bytes], bytes]  # Ed25519 detached signature (64 bytes) of the message
MAX_FRAME_BYTES = 262_144
MAX_BUFFERED_DELIVERIES = 256  # received, not yet taken by receive(); newer ones are dropped
MAX_BUFFERED_BYTES = 4 * 1024 * 1024  # the same cap in body bytes
KEEPALIVE_INTERVAL = 5.0  # seconds between pings; with the timeout and the close below, a
KEEPALIVE_TIMEOUT = 9.0  # silent server is noticed within 15 s (code 1011)
CLOSE_TIMEOUT = 1.0  # seconds for the closing handshake before the socket is dropped
_REFUSALS: dict[str, type[RequestRefused]] = {
    "offline": RecipientOffline,
    "unknown_user": UnknownUser,
    "rate_limited": RateLimited,
    "turn_unavailable": TurnUnavailable,
}


@dataclass(frozen=True, slots=True)
class Delivery:
    from_user: str
    body: bytes


class SignalingClient:
    """One logged-in session. Create it with :meth:`connect`; close it with :meth:`close`."""

    def __init__(
        self,
        ws: ClientConnection,
        user: str,
        server: str,
        server_id: str = "",
        binding: bytes = b"",
    ) -> None:
        self._ws = ws
        self.user = user
        self.server = server  # the name and id from the challenge (what we signed)
        self.server_id = server_id
        self.binding = binding  # tls-server-end-point of the certificate seen; b"" over ws://
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[ServerMessage]] = {}
        self._deliveries: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._buffered_bytes = 0
        self.dropped_deliveries = 0  # over the buffer cap (see MAX_BUFFERED_DELIVERIES)
        self._ended: SignalingClosed | SignalingProtocolError | None = None
        self._closed_by_us = False
        self._server_error: Error | None = None
        self._reader = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        url: str,
        user: str,
        public_key: bytes,
        sign: Signer,
        *,
        expected_server: str | None = None,
        expected_server_id: str | None = None,
        ca_file: str | Path | None = None,
        tls: ssl.SSLContext | None = None,
        insecure: bool = False,
        open_timeout: float = 10.0,
        ping_interval: float | None = KEEPALIVE_INTERVAL,
        ping_timeout: float | None = KEEPALIVE_TIMEOUT,
    ) -> SignalingClient:
        """Connect and log in; raise SignalingUnreachable or LoginRefused(code) on failure.

        ``expected_server`` / ``expected_server_id``: refuse (ServerNameChanged) a challenge
        with another name or id, before signing anything. ``tls`` (or ``ca_file``, a PEM file
        of trusted CAs) verifies ``wss://``; default: the system CAs. ``insecure`` allows
        ``ws://`` to a host that is not loopback (InsecureServerUrl otherwise).
        ``ping_interval`` / ``ping_timeout``: keepalive pings; a server that stops answering
        them ends the session (SignalingClosed, code 1011) within about their sum.
        """
        secure, host = server_address(url, insecure=insecure)
        context = (tls or client_tls_context(ca_file)) if secure else None
        try:
            ws = await ws_connect(
                url,
                open_timeout=open_timeout,
                compression=None,
                max_size=MAX_FRAME_BYTES,
                ssl=context,  # None for ws://
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=CLOSE_TIMEOUT,  # a dead link must not hold the close handshake
            )
        except ssl.SSLCertVerificationError as exc:
            raise ServerCertificateRejected(
                f"refused {url}: its TLS certificate does not verify ({exc.verify_message}); "
                "use its real address, or pass the CA that issued it with --ca"
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise SignalingUnreachable(f"cannot reach {url}: {exc}") from exc
        try:
            binding = channel_binding(ws) if secure else b""
            async with asyncio.timeout(open_timeout):
                challenge = await _next_frame(ws)
                if isinstance(challenge, Error):
                    raise LoginRefused(challenge.message, code=challenge.code)
                if not isinstance(challenge, Challenge):
                    raise SignalingProtocolError("the server did not start with a challenge")
                if expected_server is not None and challenge.server != expected_server:
                    raise ServerNameChanged(
                        f"the server at {url} calls itself {challenge.server!r}, but it was "
                        f"{expected_server!r}: refused to log in (another server's challenge?)"
                    )
                if expected_server_id is not None and challenge.server_id != expected_server_id:
                    raise ServerNameChanged(
                        f"the server at {url} has the id {challenge.server_id!r}, but it was "
                        f"{expected_server_id!r}: refused to log in (another deployment there?)"
                    )
                message = login_message(
                    server=challenge.server,
                    server_id=challenge.server_id,
                    host=host,
                    binding=binding,
                    user=user,
                    key=bytes(public_key),
                    nonce=challenge.nonce,
                )
                login = Login(user, bytes(public_key), bytes(sign(message)), host, binding)
                await ws.send(encode(login))
                answer = await _next_frame(ws)
                if isinstance(answer, Error):
                    raise LoginRefused(answer.message, code=answer.code)
                if not isinstance(answer, Welcome) or answer.user != user:
                    raise SignalingProtocolError("the server did not answer the login")
        except TimeoutError:
            await ws.close()
            raise SignalingUnreachable(f"{url} did not complete the login in time") from None
        except BaseException:
            await ws.close()
            raise
        return cls(ws, user, challenge.server, challenge.server_id, binding)

    async def send(self, to: str, body: bytes, *, reply_timeout: float = 10.0) -> None:
        """Hand ``body`` to the server for ``to``; return once the server confirms it.

        Raises RecipientOffline, UnknownUser, RateLimited or RequestRefused(code) when the server
        refuses it, SignalingClosed when the session ends first, TimeoutError if it cannot be
        written or answered within ``reply_timeout``.
        """
        msg_id = str(next(self._ids))
        await self._request(Send(msg_id, to, b64encode(body)), reply_timeout)

    async def lookup(self, user: str, *, reply_timeout: float = 10.0) -> bytes:
        """The 32-byte Ed25519 key the server says owns ``user``; UnknownUser if none.

        The server is untrusted: pin the answer (``ContactBook.check``) before sealing to it.
        """
        answer = await self._request(Lookup(str(next(self._ids)), user), reply_timeout)
        if not isinstance(answer, Key) or answer.user != user:
            raise SignalingProtocolError("unexpected answer to a key lookup")
        return answer.key

    async def turn_credentials(self, *, reply_timeout: float = 10.0) -> TurnCredentials:
        """Short-lived TURN credentials (coturn REST format); TurnUnavailable if none."""
        answer = await self._request(Turn(str(next(self._ids))), reply_timeout)
        if not isinstance(answer, TurnCredentials):
            raise SignalingProtocolError("unexpected answer to a TURN request")
        return answer

    async def receive(self) -> Delivery:
        """The next envelope for us; SignalingClosed (or a subclass) once the session ended.

        Envelopes wait here until received, at most MAX_BUFFERED_DELIVERIES of them and
        MAX_BUFFERED_BYTES of bodies: past that, newer ones are dropped and counted in
        :attr:`dropped_deliveries`, so a flooding server cannot exhaust our memory.
        """
        item = await self._deliveries.get()
        if item is None:
            self._deliveries.put_nowait(None)  # wake any other waiter too
            raise self._ended or SignalingClosed("closed", code=None)
        self._buffered_bytes -= len(item.body)
        return item

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            try:
                yield await self.receive()
            except SignalingClosed as exc:
                # Our own close or abort ends the iteration quietly, but never hides the
                # server's word that another login took this name over.
                if self._closed_by_us and not isinstance(exc, SessionReplaced):
                    return
                raise

    async def close(self) -> None:
        """Close the session (idempotent)."""
        self._closed_by_us = True
        await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def abort(self) -> None:
        """End the session at once, without the closing handshake (idempotent): for a session
        whose network is gone, where a handshake would only wait on a dead path. Iterating then
        ends as after :meth:`close`; requests in flight fail with SignalingClosed."""
        self._closed_by_us = True
        self._ws.transport.abort()

    def local_address(self) -> str | None:
        """The IP address this session's socket is bound to (None if unknown)."""
        name = self._ws.local_address
        return str(name[0]) if isinstance(name, tuple) and name else None

    async def probe(self, within: float) -> bool:
        """Whether the server answers a ping within ``within`` s: the session still works."""
        try:
            pong = await self._ws.ping()
            await asyncio.wait_for(pong, within)
        except (TimeoutError, ConnectionClosed):
            return False
        return True

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _request(self, message: Send | Turn | Lookup, reply_timeout: float) -> ServerMessage:
        if self._ended is not None:
            raise self._ended
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        try:
            async with asyncio.timeout(reply_timeout):  # a server that stops reading blocks send
                await self._ws.send(encode(message))
                answer = await future
        except ConnectionClosed:
            await asyncio.wait({self._reader}, timeout=reply_timeout)
            raise self._ended or SignalingClosed("connection closed", code=None) from None
        finally:
            self._pending.pop(message.id, None)
        if isinstance(answer, Error):
            kind = _REFUSALS.get(answer.code, RequestRefused)
            raise kind(answer.message, code=answer.code)
        return answer

    async def _read_loop(self) -> None:
        try:
            async for data in self._ws:
                try:
                    message = parse_server_frame(data, max_frame_bytes=MAX_FRAME_BYTES)
                except FrameError as exc:
                    self._ended = SignalingProtocolError(f"bad frame from server: {exc}")
                    await self._ws.close()
                    break
                self._dispatch(message)
        except ConnectionClosed:
            pass
        finally:
            self._finish()

    def _dispatch(self, message: ServerMessage) -> None:
        if isinstance(message, Deliver):
            self._buffer(Delivery(message.from_user, message.body))
        elif isinstance(message, Sent | TurnCredentials | Key | Error) and message.id is not None:
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Error):
            self._server_error = message  # says why the server is about to close

    def _buffer(self, delivery: Delivery) -> None:
        size = len(delivery.body)
        full = self._deliveries.qsize() >= MAX_BUFFERED_DELIVERIES
        if full or self._buffered_bytes + size > MAX_BUFFERED_BYTES:
            self.dropped_deliveries += 1
            if self.dropped_deliveries == 1:
                log.warning("delivery buffer full: dropping envelopes until receive() catches up")
            return
        self._buffered_bytes += size
        self._deliveries.put_nowait(delivery)

    def _finish(self) -> None:
        if self._ended is None:
            err = self._server_error
            code: str | int | None = err.code if err else self._ws.close_code
            text = f"session closed by the server: {err.message}" if err else "session closed"
            sent, received = self._ws.protocol.close_sent, self._ws.protocol.close_rcvd
            if err is None and received is None and sent is not None and sent.code == 1011:
                code, text = 1011, "no answer to keepalive pings: the link is dead"
            kind = (
                SessionReplaced if err is not None and err.code == "replaced" else SignalingClosed
            )
            self._ended = kind(text, code=code)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._ended)
        self._deliveries.put_nowait(None)


async def _next_frame(ws: ClientConnection) -> ServerMessage:
    try:
        data = await ws.recv()
    except ConnectionClosed as exc:
        raise SignalingClosed("the server closed the connection", code=exc.code) from exc
    try:
        return parse_server_frame(data, max_frame_bytes=MAX_FRAME_BYTES)
    except FrameError as exc:
        raise SignalingProtocolError(f"bad frame from server: {exc}") from exc
