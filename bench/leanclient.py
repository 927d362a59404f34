"""A lean signaling client for the load generator: the real login, then sends and deliveries
handled in callbacks on one asyncio protocol per connection.

:class:`~voice.net.client.SignalingClient` costs the load generator 300 to 400 us of CPU per
routed envelope (websockets' connection object, its reader task and message assembler, typed
messages and checks a phone needs against a hostile server). On two cores that left the
instances under test about one core: it hid how several instances scale, and at a paced rate
it kept the machine near saturation, inflating every server's figure with contention. This
client speaks the same protocol (RFC 6455 frames, masked from the client, and the login v2
of :mod:`signaling.protocol`) with none of that: ws:// on loopback only, whole text frames,
pings answered, a keepalive ping when the load generator says. Per connection the server
keeps and does what it does for a phone; what this client skips is its own side's checks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from signaling.messages import Challenge, Login, Send
from signaling.protocol import encode, login_message, parse_server_frame
from signaling.wire import b64encode
from voice.errors import RequestRefused
from voice.net.transport import server_address

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension is part of the wheel
    from websockets.utils import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
MAX_FRAME = 1 << 20
REPLY_TIMEOUT = 10.0  # s for the server's answer to a send (as SignalingClient's default)


def frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked with a fresh key (as RFC 6455 requires of clients)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + apply_mask(payload, mask)


class LeanClient(asyncio.Protocol):
    """One logged-in connection. ``on_deliver(body_b64)`` is called for each envelope."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.on_deliver: Callable[[str], None] | None = None
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._key = base64.b64encode(os.urandom(16))
        self._upgraded = False
        self._texts: asyncio.Queue[bytes] = asyncio.Queue()  # frames during the login only
        self._logged_in = False
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[asyncio.Future[None], asyncio.TimerHandle]] = {}
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(
        cls, url: str, user: str, public_key: bytes, sign: Callable[[bytes], bytes]
    ) -> LeanClient:
        secure, host = server_address(url)  # the host as the login binds it; loopback only
        parts = urlsplit(url)
        if secure or parts.hostname is None or parts.port is None:
            raise ValueError(f"the lean client speaks ws://HOST:PORT only, not {url}")
        loop = asyncio.get_running_loop()
        _, me = await loop.create_connection(lambda: cls(user), parts.hostname, parts.port)
        assert me._transport is not None
        request = (
            f"GET / HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {me._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        me._transport.write(request.encode())
        try:
            challenge = parse_server_frame((await me._next_text()).decode())
            if not isinstance(challenge, Challenge):
                raise ConnectionError(f"login of {user} refused: {challenge}")
            message = login_message(
                server=challenge.server,
                server_id=challenge.server_id,
                host=host,
                binding=b"",
                user=user,
                key=public_key,
                nonce=challenge.nonce,
            )
            me.send_text(encode(Login(user, public_key, sign(message), host, b"")))
            welcome = json.loads(await me._next_text())
            if welcome.get("type") != "welcome":
                raise ConnectionError(f"login of {user} refused: {welcome}")
        except BaseException:
            me.abort()
            raise
        return me

    async def _next_text(self) -> bytes:
        text = asyncio.ensure_future(self._texts.get())
        try:
            await asyncio.wait((text, self.closed), return_when=asyncio.FIRST_COMPLETED)
            if not text.done():
                raise ConnectionError(f"{self.user}: the connection closed during the login")
            return text.result()
        finally:
            text.cancel()

    # The load generator's side.
    def send(self, to: str, body: bytes) -> asyncio.Future[None]:
        """Send an envelope; the future ends with the server's answer (RequestRefused for an
        error),
        ConnectionError once the connection is gone, TimeoutError after REPLY_TIMEOUT."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self.closed.done() or self._transport is None or self._transport.is_closing():
            done.set_exception(ConnectionError(f"{self.user}: the connection is closed"))
            return done
        msg_id = str(next(self._ids))
        timer = loop.call_later(REPLY_TIMEOUT, self._unanswered, msg_id)
        self._pending[msg_id] = (done, timer)
        self.send_text(encode(Send(msg_id, to, b64encode(body))))
        return done

    def _unanswered(self, msg_id: str) -> None:
        done, _ = self._pending.pop(msg_id, (None, None))
        if done is not None and not done.done():
            done.set_exception(TimeoutError(f"no answer within {REPLY_TIMEOUT:g} s"))

    def ping(self) -> None:
        """A keepalive ping, as a phone sends every few seconds (the pong is ignored)."""
        self._write(frame(PING, b"lean"))

    def send_text(self, text: str) -> None:
        self._write(frame(TEXT, text.encode()))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def close(self) -> None:
        self._write(frame(CLOSE, (1000).to_bytes(2, "big")))
        if self._transport is not None:
            self._transport.close()
        await asyncio.wait((self.closed,), timeout=2.0)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # The protocol's side.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for done, timer in self._pending.values():
            timer.cancel()
            if not done.done():
                done.set_exception(ConnectionError("connection lost"))
        self._pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1")
            del self._buffer[: end + 4]
            accept = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
            if not head.startswith("HTTP/1.1 101") or accept not in head:
                self.abort()
                return
            self._upgraded = True
        self._frames()

    def _frames(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            first, n = buf[0], buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if n > MAX_FRAME or buf[1] & 0x80 or not first & 0x80:  # masked or fragmented
                self.abort()
                return
            if len(buf) < at + n:
                return
            payload = bytes(buf[at : at + n])
            del buf[: at + n]
            opcode = first & 0x0F
            if opcode == TEXT:
                self._text(payload)
            elif opcode == PING:
                self._write(frame(PONG, payload))
            elif opcode == CLOSE:
                self._write(frame(CLOSE, payload[:2]))
                if self._transport is not None:
                    self._transport.close()
                return

    def _text(self, payload: bytes) -> None:
        obj: dict[str, Any] = json.loads(payload)
        kind = obj.get("type")
        if not self._logged_in:
            self._texts.put_nowait(payload)  # connect() reads the challenge and the welcome
            self._logged_in = kind == "welcome"  # what follows is routing
            return
        if kind == "deliver":
            if self.on_deliver is not None:
                self.on_deliver(obj["body"])
            return
        done, timer = self._pending.pop(obj.get("id", ""), (None, None))
        if done is None or timer is None or done.done():
            return
        timer.cancel()
        if kind == "sent":
            done.set_result(None)
        else:
            code = str(obj.get("code", kind))
            done.set_exception(RequestRefused(str(obj.get("message", code)), code=code))
