"""A small asyncio client of the Janus API over its WebSocket transport, for the VideoRoom SFU.

Why WebSockets: replies and asynchronous events come on one connection (no HTTP long poll), and
``websockets`` is already a dependency. Janus trusts nothing we say here beyond routing: the
media it forwards is sealed end to end (SFrame) before it reaches aiortc.

Wire format (JSON text frames, subprotocol ``janus-protocol``). Every request carries
``"janus": <verb>`` and a fresh ``"transaction"``; after ``create`` also ``"session_id"``, after
``attach`` also ``"handle_id"``. Replies echo the transaction:

    create, attach, destroy, detach  ->  {"janus": "success", "data": {"id": N}}
    keepalive                        ->  {"janus": "ack"}
    message (synchronous request)    ->  {"janus": "success", "plugindata": {"data": {...}}}
    message (asynchronous request)   ->  {"janus": "ack"}, then
                                         {"janus": "event", "plugindata": {...}, "jsep": {...}}
    any refused request              ->  {"janus": "error", "error": {"code": N, "reason": "..."}}

A plugin refusal is a success/event whose ``plugindata.data`` holds ``error_code`` and
``error``. Events without a transaction (``webrtcup``, ``media``, ``hangup``, a publisher joining
or leaving) are queued on the handle they name (``sender``). Both kinds of refusal, a closed
connection and a request left unanswered for ``timeout`` seconds raise :class:`JanusError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from voice.errors import VoiceError
from voice.net.transport import client_tls_context

__all__ = ["VIDEOROOM", "JanusError", "JanusHandle", "JanusSession", "server_info"]

VIDEOROOM: Final = "janus.plugin.videoroom"
SUBPROTOCOL: Final = Subprotocol("janus-protocol")
KEEPALIVE_S: Final = 25.0  # Janus drops a session after session_timeout (60 s) of silence

Json = dict[str, Any]


class JanusError(VoiceError):
    """Janus refused a request (``.code`` and the reason in the message), was unreachable, or
    did not answer in time (``.code`` is None then). A Janus code is the core's (4xx) or the
    plugin's (e.g. 433: a room that requires e2ee refused a publisher that did not declare it)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason if code is None else f"{reason} (Janus error {code})")
        self.code = code


def _tid() -> str:
    return secrets.token_hex(8)


def _check(reply: Json) -> Json:
    """``reply`` if it is not a refusal (of the core or of the plugin); else raise."""
    if reply.get("janus") == "error":
        error = reply.get("error") or {}
        raise JanusError(str(error.get("reason", "refused")), int(error.get("code", 0)))
    data = (reply.get("plugindata") or {}).get("data") or {}
    if "error_code" in data or "error" in data:
        raise JanusError(str(data.get("error", "refused")), int(data.get("error_code", 0)))
    return reply


@dataclass(frozen=True)
class Reply:
    """What a plugin answered: its ``data`` and, when it negotiates, a ``jsep``."""

    data: Json
    jsep: Json | None = None


@dataclass
class _Pending:
    future: asyncio.Future[Json]
    past_ack: bool  # a plugin message: the "ack" only says the real answer will follow


@dataclass
class JanusHandle:
    """One attached plugin handle. ``events`` receives its unsolicited events; ``webrtc_up`` is
    set while Janus's PeerConnection for it is up (``webrtcup``, cleared by ``hangup``)."""

    session: JanusSession
    id: int
    events: asyncio.Queue[Json] = field(default_factory=asyncio.Queue)
    webrtc_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, body: Json, jsep: Json | None = None) -> Reply:
        """A plugin request; waits for the plugin's answer (synchronous or event)."""
        message: Json = {"janus": "message", "handle_id": self.id, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self.session.request(message)
        data = (reply.get("plugindata") or {}).get("data") or {}
        return Reply(data, reply.get("jsep"))

    async def wait_webrtc_up(self) -> None:
        """Until Janus says this handle's PeerConnection is up (DTLS done); a publisher is only
        a feed others can subscribe to from then on."""
        try:
            async with asyncio.timeout(self.session.reply_timeout):
                await self.webrtc_up.wait()
        except TimeoutError:
            raise JanusError(f"no webrtcup in {self.session.reply_timeout} s") from None

    async def detach(self) -> None:
        """Release the handle (and its PeerConnection on Janus's side)."""
        await self.session.request({"janus": "detach", "handle_id": self.id})
        self.session.handles.pop(self.id, None)


class JanusSession:
    """A Janus session over one WebSocket; use :meth:`open` (an async context manager)."""

    def __init__(self, ws: ClientConnection, *, reply_timeout: float) -> None:
        self._ws = ws
        self.reply_timeout = reply_timeout
        self._pending: dict[str, _Pending] = {}
        self.handles: dict[int, JanusHandle] = {}
        self.id: int | None = None
        self._reader = asyncio.create_task(self._read())
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, *, reply_timeout: float = 10.0, ca_file: Path | None = None
    ) -> AsyncIterator[Self]:
        """Connect, create a session and keep it alive; destroy it and disconnect on exit.

        Every request, the connection included, fails after ``reply_timeout`` seconds.
        ``ca_file``: the CAs that verify a ``wss://`` Janus (default: the system's)."""
        session = cls(await _connect(url, reply_timeout, ca_file), reply_timeout=reply_timeout)
        try:
            reply = await session.request({"janus": "create"})
            session.id = _id_of(reply)
            session._keepalive = asyncio.create_task(session._keep_alive())
            yield session
        finally:
            await session.close()

    async def attach(self, plugin: str = VIDEOROOM) -> JanusHandle:
        """A new handle on ``plugin`` (one per PeerConnection)."""
        reply = await self.request({"janus": "attach", "plugin": plugin})
        handle = JanusHandle(self, _id_of(reply))
        self.handles[handle.id] = handle
        return handle

    async def request(self, message: Json) -> Json:
        """Send ``message`` with a fresh transaction; its final reply, checked."""
        tid = _tid()
        wire = {**message, "transaction": tid}
        if self.id is not None:
            wire["session_id"] = self.id
        pending = _Pending(
            asyncio.get_running_loop().create_future(), message["janus"] == "message"
        )
        self._pending[tid] = pending
        try:
            await self._ws.send(json.dumps(wire))
            async with asyncio.timeout(self.reply_timeout):
                return _check(await pending.future)
        except TimeoutError:
            raise JanusError(
                f"no answer to {message['janus']!r} in {self.reply_timeout} s"
            ) from None
        except ConnectionClosed as exc:
            raise JanusError(f"connection to Janus lost: {exc}") from exc
        finally:
            self._pending.pop(tid, None)

    @property
    def closed(self) -> bool:
        """Whether the connection to Janus is gone (closed by us, by Janus, or lost)."""
        return self._reader.done()

    async def close(self) -> None:
        """Destroy the session (best effort) and disconnect; idempotent."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self.id is not None and not self._reader.done():
            with contextlib.suppress(JanusError):
                await self.request({"janus": "destroy"})
            self.id = None
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            with contextlib.suppress(JanusError):
                await self.request({"janus": "keepalive"})

    async def _read(self) -> None:
        """Route each message to the request it answers, or to its handle's event queue."""
        reason = "connection to Janus closed"
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if not isinstance(message, dict):
                    raise ValueError(f"not a JSON object: {raw!r:.80}")
                self._route(message)
        except ConnectionClosed:
            pass
        except ValueError as exc:  # JSONDecodeError too; the wire format is broken: give up
            reason = f"Janus sent something that is not its API: {exc}"
            await self._ws.close()
        finally:
            for pending in self._pending.values():
                if not pending.future.done():
                    pending.future.set_exception(JanusError(reason))

    def _route(self, message: Json) -> None:
        pending = self._pending.get(str(message.get("transaction")))
        if pending is not None and not pending.future.done():
            if message.get("janus") == "ack" and pending.past_ack:
                return
            pending.future.set_result(message)
            return
        handle = self.handles.get(int(message.get("sender") or 0))
        if handle is not None:
            if message.get("janus") == "webrtcup":
                handle.webrtc_up.set()
            elif message.get("janus") == "hangup":
                handle.webrtc_up.clear()
            handle.events.put_nowait(message)


def _id_of(reply: Json) -> int:
    """The ``data.id`` of a create or attach reply; JanusError if Janus sent something else."""
    try:
        return int(reply["data"]["id"])
    except (KeyError, TypeError, ValueError):
        raise JanusError("Janus answered without an id") from None


async def _connect(url: str, open_timeout: float, ca_file: Path | None = None) -> ClientConnection:
    tls = client_tls_context(ca_file) if url.startswith("wss://") else None
    try:
        async with asyncio.timeout(open_timeout):
            return await connect(url, subprotocols=[SUBPROTOCOL], open_timeout=None, ssl=tls)
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise JanusError(f"cannot reach Janus at {url}: {exc!r}") from exc


async def server_info(url: str, *, reply_timeout: float = 5.0) -> Json:
    """Janus's ``info`` reply (version, plugins, transports): proof that it answers."""
    ws = await _connect(url, reply_timeout)
    session = JanusSession(ws, reply_timeout=reply_timeout)
    try:
        return await session.request({"janus": "info"})
    finally:
        await session.close()
