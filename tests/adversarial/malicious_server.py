"""A malicious signaling server: the real wire protocol, with pluggable misbehaviour.

It is a real websockets server speaking signaling v1 (frames parsed and built with
:mod:`signaling.protocol`, the login checked with :mod:`signaling.auth`), so the
real client (``voice.net.client`` inside a real ``Phone``) cannot tell it from the honest one.
Unlike the honest server it records everything it sees (every frame in and out, every envelope
body), and hands every ``send`` and ``lookup`` to a :class:`Behaviour` that decides what to do
with it: forward it, drop it, hold it back, duplicate it, rewrite it, or answer with a lie.
Tests also inject deliveries directly (:meth:`MaliciousServer.deliver`) with any ``from``.

    async with running_server(Behaviour()) as server:
        url = server.url
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from signaling.auth import ServerIdentity
from signaling.errors import FrameError
from signaling.messages import (
    Challenge,
    Error,
    Key,
    Login,
    Lookup,
    Send,
    Sent,
    Turn,
    TurnCredentials,
    Welcome,
)
from signaling.protocol import VERSION, encode, parse_client_frame
from signaling.wire import b64decode_strict, b64encode

SERVER_NAME = "voice-signaling"
SERVER_ID = "badbadbadbadbadbadbadbadbadbad00"
IDENTITY = ServerIdentity(SERVER_NAME, SERVER_ID)  # plain ws:// on loopback


@dataclass(frozen=True)
class Frame:
    """One frame the server saw or sent: ``direction`` is "in" (from ``user``) or "out"."""

    direction: str
    user: str | None
    text: str
    at: float


@dataclass(frozen=True)
class Envelope:
    """One ``send`` the server received: who sent it, to whom, and the opaque body."""

    sender: str
    to: str
    body: bytes
    at: float


@dataclass(frozen=True)
class TurnOffer:
    """What the server answers to ``turn`` requests (all of it is the server's to choose)."""

    uris: tuple[str, ...]
    username: str
    password: str
    ttl: int = 600


class Behaviour:
    """Honest routing plus recording. Subclasses override :meth:`on_send` / :meth:`on_lookup`."""

    server: MaliciousServer

    def attach(self, server: MaliciousServer) -> None:
        self.server = server

    async def on_send(self, envelope: Envelope) -> None:
        """Decide the fate of an envelope (already answered ``sent`` to its sender)."""
        await self.server.deliver(envelope.to, envelope.sender, envelope.body)

    def on_lookup(self, user: str) -> bytes | None:
        """The identity key to claim for ``user`` (None: unknown_user)."""
        return self.server.keys.get(user)


@dataclass(eq=False)
class _Session:
    ws: ServerConnection
    user: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MaliciousServer:
    """The server; start it with :func:`running_server`."""

    def __init__(self, behaviour: Behaviour, *, turn: TurnOffer | None = None) -> None:
        self.behaviour = behaviour
        self.turn = turn
        self.keys: dict[str, bytes] = {}  # username -> the key that logged in first
        self.frames: list[Frame] = []
        self.envelopes: list[Envelope] = []
        self.delivered: list[Envelope] = []  # what we actually delivered (after misbehaving)
        self.lookups: list[tuple[str, str]] = []  # (who asked, for whom)
        self.port = 0
        self._sessions: dict[str, _Session] = {}
        self._ws: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Condition()
        behaviour.attach(self)

    def set_behaviour(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        behaviour.attach(self)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def online(self, user: str) -> bool:
        return user in self._sessions

    async def start(self) -> None:
        self._ws = await serve(self._handle, "127.0.0.1", 0, compression=None, max_size=2**20)
        self.port = int(next(iter(self._ws.sockets)).getsockname()[1])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()

    def later(self, delay: float, action: Callable[[], Awaitable[object]]) -> None:
        """Run ``action()`` after ``delay`` seconds (held-back deliveries), cancelled on stop."""

        async def run() -> None:
            await asyncio.sleep(delay)
            await action()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, to: str, from_user: str, body: bytes) -> bool:
        """Deliver ``body`` to ``to`` claiming it comes from ``from_user`` (any name at all:
        the frame is written by a JSON encoder, not by ``deliver_frame``, which takes only
        checked names)."""
        session = self._sessions.get(to)
        if session is None:
            return False
        self.delivered.append(Envelope(from_user, to, body, _now()))
        frame = {"v": VERSION, "type": "deliver", "from": from_user, "body": b64encode(body)}
        await self._send(session, json.dumps(frame, separators=(",", ":")))
        return True

    async def wait_for(self, count: int, *, sender: str | None = None, within: float = 10) -> None:
        """Wait until at least ``count`` envelopes (from ``sender``) arrived."""

        def enough() -> bool:
            return len(self.envelopes_from(sender)) >= count

        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(enough)

    def envelopes_from(self, sender: str | None) -> list[Envelope]:
        return [e for e in self.envelopes if sender is None or e.sender == sender]

    def seen_bytes(self) -> list[bytes]:
        """Everything the server saw, as bytes: every frame's text and every decoded body."""
        out = [f.text.encode() for f in self.frames]
        out += [e.body for e in self.envelopes]
        out += [e.body for e in self.delivered]
        return out

    # connection handling

    async def _handle(self, ws: ServerConnection) -> None:
        session = _Session(ws)
        nonce = os.urandom(32)
        await self._send(session, encode(Challenge(SERVER_NAME, SERVER_ID, nonce)))
        try:
            text = await ws.recv()
            assert isinstance(text, str)
            self._record("in", None, text)
            login = parse_client_frame(text)
            if not isinstance(login, Login) or IDENTITY.check_login(login, nonce) is not None:
                await self._send(session, encode(Error("bad_signature", "no")))
                return
            if self.keys.setdefault(login.user, login.key) != login.key:
                await self._send(session, encode(Error("username_taken", "taken")))
                return
            session.user = login.user
            old = self._sessions.get(login.user)
            self._sessions[login.user] = session
            if old is not None:
                await old.ws.close(4003, "replaced")
            await self._send(session, encode(Welcome(login.user)))
            async for text in ws:
                assert isinstance(text, str)
                self._record("in", session.user, text)
                await self._frame(session, text)
        except (ConnectionClosed, FrameError):
            pass
        finally:
            if session.user is not None and self._sessions.get(session.user) is session:
                del self._sessions[session.user]

    async def _frame(self, session: _Session, text: str) -> None:
        assert session.user is not None
        message = parse_client_frame(text)
        if isinstance(message, Lookup):
            await self._lookup(session, message.id, message.user)
        elif isinstance(message, Send):
            envelope = Envelope(session.user, message.to, b64decode_strict(message.body), _now())
            async with self._arrived:
                self.envelopes.append(envelope)
                self._arrived.notify_all()
            if message.to not in self.keys:
                await self._send(session, encode(Error("unknown_user", "no", message.id)))
                return
            if not self.online(message.to):
                await self._send(session, encode(Error("offline", "no", message.id)))
                return
            await self._send(session, encode(Sent(message.id)))
            await self.behaviour.on_send(envelope)
        elif isinstance(message, Turn):
            if self.turn is None:
                await self._send(session, encode(Error("turn_unavailable", "no", message.id)))
                return
            t = self.turn
            creds = TurnCredentials(message.id, t.username, t.password, t.ttl, t.uris)
            await self._send(session, encode(creds))

    async def _lookup(self, session: _Session, msg_id: str, user: str) -> None:
        assert session.user is not None
        self.lookups.append((session.user, user))
        key = self.behaviour.on_lookup(user)
        if key is None:
            await self._send(session, encode(Error("unknown_user", "no such user", msg_id)))
            return
        await self._send(session, encode(Key(msg_id, user, key)))

    async def _send(self, session: _Session, text: str) -> None:
        self._record("out", session.user, text)
        async with session.lock:
            with contextlib.suppress(ConnectionClosed):
                await session.ws.send(text)

    def _record(self, direction: str, user: str | None, text: str) -> None:
        self.frames.append(Frame(direction, user, text, _now()))


def _now() -> float:
    return asyncio.get_running_loop().time()


@contextlib.asynccontextmanager
async def running_server(
    behaviour: Behaviour | None = None, *, turn: TurnOffer | None = None
) -> AsyncIterator[MaliciousServer]:
    server = MaliciousServer(behaviour or Behaviour(), turn=turn)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
