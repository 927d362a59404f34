"""One connection to Redis on asyncio: pipelined commands, and the pushes of a subscription.

The I/O edge of :mod:`signaling.resp` (why not redis-py: see there). Commands go out in the
order they are issued; those issued in one pass of the event loop leave in one write, and
each gets its reply in order. A subscribed connection hands each ``message`` push to
``on_message`` from inside the protocol's callback: no task, no queue per message.

Whatever goes wrong (Redis closes, the stream breaks, :meth:`close`) fails every command
waiting with :class:`~signaling.errors.RedisUnavailable` and sets
:attr:`RedisConnection.closed`; the caller connects again. So does an error reply, for its
own command only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

from signaling.errors import RedisUnavailable
from signaling.resp import Arg, ProtocolError, Reply, ReplyError, ReplyParser, encode_command


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is and how to log in, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = ""
    port: int = 6379
    path: str = ""  # a unix socket instead of host and port
    tls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log or a traceback
    db: int = 0

    @property
    def where(self) -> str:
        """Where Redis is, for logs: built from the parts, so no password can come along."""
        place = self.path or f"{self.host}:{self.port}"
        return f"{'tls ' if self.tls else ''}{place} db {self.db}"


URL_FORMS = (
    "redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix://[[USER]:PASSWORD@]/PATH[?db=DB], "
    "with / # ? @ : % in a password percent-encoded"
)


def parse_url(url: str) -> RedisAddress:
    """``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` (``rediss://`` with TLS, the server's
    certificate verified) or ``unix://[[USER]:PASSWORD@]/PATH[?db=DB]``. ValueError if not,
    whose message never repeats the URL (it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"not a Redis URL: {URL_FORMS}") from None
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    if username and not password:
        raise ValueError("a Redis user needs its password (USER:PASSWORD@)")
    if set(query) - {"db"} or any(len(v) != 1 for v in query.values()):
        raise ValueError("the only query parameter is db=N")
    db_text = query.get("db", [""])[0]
    if parts.scheme == "unix":
        if parts.hostname or port or not parts.path:
            raise ValueError("a unix:// URL is unix:///PATH (three slashes), no host")
        path = unquote(parts.path)
        address = RedisAddress(path=path, username=username, password=password)
    elif parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError("a redis:// URL needs a host")
        path_db = parts.path.strip("/")
        if path_db and db_text:
            raise ValueError("the database is given twice")
        db_text = db_text or path_db
        address = RedisAddress(
            host=unquote(parts.hostname),
            port=port or 6379,
            tls=parts.scheme == "rediss",
            username=username,
            password=password,
        )
    else:
        raise ValueError(f"not a Redis URL: {URL_FORMS}")
    if db_text:
        if not (db_text.isascii() and db_text.isdigit()) or int(db_text) > 1_000_000:
            raise ValueError("the database is a number")
        address = dataclasses.replace(address, db=int(db_text))
    return address


class RedisConnection(asyncio.Protocol):
    """Commands and their replies on one connection; ``on_message`` for a subscription's
    pushes (the data of each ``message``)."""

    def __init__(
        self,
        on_message: Callable[[bytes], None] | None = None,
        on_error_reply: Callable[[str], None] | None = None,
    ) -> None:
        """``on_error_reply``: told each error reply's text (its command fails anyway)."""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_message = on_message
        self._on_error_reply = on_error_reply
        self._parser = ReplyParser()
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._out: list[bytes] = []  # commands of this loop pass, written together
        self._sent: asyncio.Future[None] | None = None  # done once they are written
        self._transport: asyncio.Transport | None = None
        self._why = ""  # why it closed

    # The caller's side.
    def call(self, *args: Arg) -> asyncio.Future[Reply]:
        """Send one command; its reply (the future raises RedisUnavailable for an error reply
        or a lost connection)."""
        if self.closed.done() or self._transport is None:
            raise RedisUnavailable(f"redis: {self._why or 'not connected'}")
        loop = asyncio.get_running_loop()
        if not self._out:
            loop.call_soon(self._write_out)
            self._sent = loop.create_future()
        self._out.append(encode_command(*args))
        reply: asyncio.Future[Reply] = loop.create_future()
        self._waiting.append(reply)
        return reply

    @property
    def why(self) -> str:
        """Why it closed ("" while open)."""
        return self._why

    def close(self, why: str = "closed") -> None:
        """Close now; what waits fails with ``why`` (the first reason given, if several)."""
        self._why = self._why or why
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what waits
        else:
            self._fail_all()

    def sent(self) -> asyncio.Future[None]:
        """Done once the commands issued so far have left, written together at the end of
        this loop pass: a reply's deadline runs from there, not from a pass that this process
        spent elsewhere (under load, seconds; Redis was not even asked yet)."""
        if self._sent is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return self._sent

    def _write_out(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()
        sent, self._sent = self._sent, None
        if sent is not None and not sent.done():
            sent.set_result(None)

    # The protocol's side.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (not an isinstance check: other event loops' transports, such
        # as uvloop's, are not subclasses of asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self.close(f"broken stream ({exc})")
            return
        for reply in replies:
            if self._on_message is not None and _is_message(reply):
                assert isinstance(reply, list)
                payload = reply[2]
                if isinstance(payload, bytes):
                    self._on_message(payload)
                continue
            if not self._waiting:
                self.close("a reply nobody asked for")
                return
            waiter = self._waiting.popleft()
            if waiter.done():
                continue
            if isinstance(reply, ReplyError):
                if self._on_error_reply is not None:
                    self._on_error_reply(reply.message)
                waiter.set_exception(RedisUnavailable(f"redis: {reply.message[:200]}"))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._why:
            self._why = str(exc)[:200] if exc is not None else "redis closed the connection"
        self._fail_all()

    def _fail_all(self) -> None:
        self._out.clear()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisUnavailable(f"redis: {self._why}"))
        if not self.closed.done():
            self.closed.set_result(None)


def _is_message(reply: Reply) -> bool:
    return isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"


async def connect(
    address: RedisAddress,
    wait: float,
    on_message: Callable[[bytes], None] | None = None,
    on_error_reply: Callable[[str], None] | None = None,
) -> RedisConnection:
    """A connection, logged in and on its database, within ``wait`` s (RedisUnavailable,
    OSError or TimeoutError if not)."""
    loop = asyncio.get_running_loop()

    def protocol() -> RedisConnection:
        return RedisConnection(on_message, on_error_reply)

    async with asyncio.timeout(wait):
        if address.path:
            _, conn = await loop.create_unix_connection(protocol, address.path)
        else:
            tls = ssl.create_default_context() if address.tls else None
            _, conn = await loop.create_connection(protocol, address.host, address.port, ssl=tls)
        try:
            if address.password:
                user = (address.username,) if address.username else ()
                await conn.call("AUTH", *user, address.password)
            if address.db:
                await conn.call("SELECT", address.db)
        except BaseException:
            conn.close()
            raise
    return conn


async def closed(conn: RedisConnection | None) -> None:
    """Close ``conn`` (if any) and wait until it is."""
    if conn is not None:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.closed
