"""The phone: one signaling session, the user's calls, and everything that spans calls.

    phone = await Phone.connect(config, audio=lambda call: (source, sink))
    call = await phone.call("bob")          # look up and pin bob's key, send the offer
    await call.wait_connected(timeout=30)   # bob accepted: audio runs, call.sas is set
    ...
    incoming = await phone.incoming()       # the next ringing call; accept() or decline()
    await phone.close()                     # hangs up, closes media, logs out

If the signaling session is lost (server down, connection reset), calls still being set up fail
(``signaling_lost``: they need the server), but a CONNECTED call goes on: its media is peer to
peer. Its hangup can then not be sent: it ends locally and the peer's media timeout ends the
other side. :attr:`Phone.signaling_lost` / :meth:`Phone.wait_signaling_lost` tell the user; no
new call can be placed or received until a new Phone connects.

Every delivery goes through the pure :class:`~voice.call.inbound.Inbound` (open, freshness,
pinned sender key, busy and glare), and the phone carries out the actions it returns. A changed
key refuses the call before it rings and raises a :class:`KeyChangedWarning`. Each call runs on
its own task (:mod:`voice.phone.call`). Bad, stale or misrouted deliveries are dropped and
counted in :attr:`Phone.dropped`, never shown to a call in progress.

About 360 lines: the user's handle on the phone (call, incoming, warnings, close) and the
carrying out of the inbound actions share the table of calls; the journal writer, the media
set-up, the TURN relay and each call's outbox already live in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from voice.audio.base import AudioSink, AudioSource
from voice.call import events as ev
from voice.call import inbound as ib
from voice.call import messages as m
from voice.call import routing
from voice.call.events import Role
from voice.call.inbound import CallView, Inbound, KeyChangedWarning
from voice.call.outbound import CallSealer
from voice.crypto.replay import ReplayGuard
from voice.errors import (
    AlreadyInCall,
    BadPublicKey,
    CallControlError,
    PhoneClosed,
    SignalingClientError,
    SignalingClosed,
    VoiceError,
)
from voice.media.session import MediaSession
from voice.net.client import Delivery, SignalingClient
from voice.phone.call import Call
from voice.phone.config import PhoneConfig
from voice.phone.journal import JournalWriter
from voice.phone.media import CLOSE_TIMEOUT, open_session
from voice.phone.turn import relay_for

__all__ = ["AudioFactory", "Call", "KeyChangedWarning", "Phone", "PhoneConfig"]

log = logging.getLogger("voice.phone")
AudioFactory = Callable[[Call], tuple[AudioSource, AudioSink]]
"""Makes the audio source and sink of a call; the call's MediaSession owns (and closes) them."""
MAX_ENDED_CALLS = 256  # ended calls remembered so their ids stay refused
MAX_WARNINGS = 64  # key-changed warnings kept (and queued) for the user, newest last


class Phone:
    """A logged-in phone. Create it with :meth:`connect`; close it with :meth:`close`."""

    def __init__(self, config: PhoneConfig, client: SignalingClient, audio: AudioFactory) -> None:
        self.config = config
        self.auto_answer = False  # accept every incoming call at once (demo, benchmarks)
        self.dropped: Counter[str] = Counter()  # deliveries dropped, by reason
        self.deliveries = 0  # deliveries handled (dropped, delivered, rang or answered busy)
        self.warnings: list[KeyChangedWarning] = []
        self._client = client
        self._audio = audio
        replay = ReplayGuard(clock=config.hooks.clock)
        self._journal: JournalWriter | None = None
        if config.replay_journal is not None:
            self._journal = JournalWriter(config.replay_journal, replay, config.hooks.clock)
            self._journal.restore()
        self._inbound = Inbound(config.identity, config.contacts, replay)
        self._calls: dict[bytes, Call] = {}
        self._incoming: asyncio.Queue[Call | None] = asyncio.Queue()
        self._warning_queue: asyncio.Queue[KeyChangedWarning] = asyncio.Queue(MAX_WARNINGS)
        self._closed = False
        self._lost: SignalingClientError | None = None
        self._lost_event = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read_loop(), name=f"phone-{config.user}")

    @classmethod
    async def connect(
        cls, config: PhoneConfig, *, audio: AudioFactory, auto_answer: bool = False
    ) -> Phone:
        """Log in to the signaling server (SignalingUnreachable / LoginRefused on failure)."""
        client = await SignalingClient.connect(
            config.server_url,
            config.user,
            config.identity.public_key,
            config.identity.sign,
            expected_server=config.expected_server,
            expected_server_id=config.expected_server_id,
            ca_file=config.ca_file,
            insecure=config.insecure,
            open_timeout=config.request_timeout,
        )
        phone = cls(config, client, audio)
        phone.auto_answer = auto_answer
        return phone

    @property
    def user(self) -> str:
        return self.config.user

    @property
    def server_name(self) -> str:
        """The name the signaling server gave in its login challenge (what we signed)."""
        return self._client.server

    @property
    def server_id(self) -> str:
        """The signaling server's deployment id from its login challenge (what we signed)."""
        return self._client.server_id

    @property
    def calls(self) -> list[Call]:
        """Every call this phone remembers (live and recently ended), oldest first."""
        return list(self._calls.values())

    @property
    def signaling_lost(self) -> SignalingClientError | None:
        """Why the signaling session ended (None while it is up): show it to the user.

        A connected call survives it; nothing new can be dialed or received.
        """
        return self._lost

    async def wait_signaling_lost(self, timeout: float | None = None) -> SignalingClientError:  # noqa: ASYNC109
        """Return once the signaling session is lost (not when we close the phone)."""
        async with asyncio.timeout(timeout):
            await self._lost_event.wait()
        assert self._lost is not None
        return self._lost

    @property
    def active_call(self) -> Call | None:
        live = [c for c in self._calls.values() if not c.state.terminal]
        return live[0] if live else None

    async def call(self, user: str) -> Call:
        """Dial ``user`` at once; return the Call (then ``wait_connected``).

        Raises UnknownUser, RecipientOffline (nobody to ring), KeyChangedError (the server's
        key for ``user`` is not the pinned one: nothing is sent), BadPublicKey (the server
        claims our own key belongs to ``user``: nothing is pinned or sent), AlreadyInCall,
        PhoneClosed.
        If ``user`` is calling us right now, that call is accepted and returned instead.
        """
        self._check_open()
        if user == self.user:
            raise CallControlError("you cannot call yourself")
        accepted = await self._dial_decision(user)
        if accepted is not None:
            return accepted
        loop = asyncio.get_running_loop()
        dialed_at = loop.time()
        key = await self._client.lookup(user, reply_timeout=self.config.request_timeout)
        if key == self.config.identity.public_key:  # a lying (or broken) server: never pin it
            raise BadPublicKey(
                f"the server says {user!r} owns your own identity key; refusing the call"
            )
        self.config.contacts.check(user, key)  # KeyChangedError: refuse before anything is sent
        call = Call(self, role=Role.CALLER, peer=user, peer_key=key, call_id=os.urandom(16))
        call.timings.dialed_at = dialed_at
        try:
            dial = await call.prepare_dial()
            self._check_open()
            accepted = await self._dial_decision(user)  # an offer may have come meanwhile
        except BaseException:
            await call.discard()
            raise
        if accepted is not None:
            await call.discard()
            return accepted
        self._calls[call.call_id] = call
        call.start(dial)
        log.info("call %s: dialing", call.short_id)
        try:
            await call.first_send  # the offer reached the server (or it refused it)
        except (VoiceError, TimeoutError, OSError):
            await call.wait_ended(timeout=CLOSE_TIMEOUT)
            raise
        return call

    async def incoming(self, timeout: float | None = None) -> Call:  # noqa: ASYNC109
        """The next incoming call that rings (PhoneClosed once the phone is closed or lost)."""
        async with asyncio.timeout(timeout):
            while True:
                call = await self._incoming.get()
                if call is None:
                    self._incoming.put_nowait(None)
                    raise PhoneClosed("the phone is closed") from self._lost
                if not call.state.terminal:
                    return call

    async def next_warning(self, timeout: float | None = None) -> KeyChangedWarning:  # noqa: ASYNC109
        """The next key-changed warning (also kept in :attr:`warnings`)."""
        async with asyncio.timeout(timeout):
            return await self._warning_queue.get()

    async def close(self) -> None:
        """Hang up every call, close every media session, log out; idempotent and bounded."""
        if self._closed:
            return
        self._closed = True
        live = [c for c in self._calls.values() if not c.state.terminal]
        for call in live:
            call.post(ev.UserHangup())
        await _bounded(asyncio.gather(*(c.aclose() for c in self._calls.values())))
        if self._journal is not None:
            await _bounded(self._journal.flush())
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await _bounded(self._client.close())
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        self._incoming.put_nowait(None)

    async def __aenter__(self) -> Phone:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- PhoneLink: what calls use --------------------------------------------------------

    async def send_envelope(self, to: str, body: bytes) -> None:
        await self._client.send(to, body, reply_timeout=self.config.request_timeout)

    async def make_media(self, call: Call, *, controlling: bool) -> MediaSession:
        cfg = self.config
        turn = await relay_for(self._client, cfg) if cfg.use_turn else None
        return await open_session(cfg, self._audio(call), controlling=controlling, turn=turn)

    def on_ring(self, call: Call) -> None:
        if self.auto_answer or call.auto_accept:
            call.post(ev.UserAccept())
        else:
            self._incoming.put_nowait(call)

    def on_end(self, call: Call) -> None:
        ended = [cid for cid, c in self._calls.items() if c.state.terminal]
        for cid in ended[: max(0, len(ended) - MAX_ENDED_CALLS)]:
            del self._calls[cid]

    def count(self, what: str) -> None:
        self.dropped[what] += 1

    # ---- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or self._lost is not None:
            raise PhoneClosed("the phone is closed") from self._lost

    def _views(self) -> list[CallView]:
        return [c.view() for c in self.calls]

    async def _dial_decision(self, user: str) -> Call | None:
        infos = [routing.CallInfo(c.call_id, c.peer, c.role, c.state) for c in self.calls]
        decision = routing.decide_dial(infos, peer=user)
        if isinstance(decision, routing.AlreadyInCall):
            raise AlreadyInCall("hang up the current call first")
        if isinstance(decision, routing.AcceptInstead):
            call = self._calls[decision.call_id]
            await call.accept()
            return call
        return None

    async def _read_loop(self) -> None:
        try:
            async for delivery in self._client:
                try:
                    self._on_delivery(delivery)
                except Exception:  # one bad delivery must never stop the phone
                    log.exception("dropped a delivery after an internal error")
                    self.count("internal")
        except SignalingClientError as exc:
            self._lost = exc
        finally:
            if not self._closed:
                self._lost = self._lost or SignalingClosed("the signaling session ended", code=None)
                log.warning(
                    "signaling session lost (%s): calls in setup fail, a connected call goes on",
                    type(self._lost).__name__,
                )
                self._lost_event.set()
                for call in self._calls.values():
                    call.post(ev.SignalingLost())  # the machine decides: setup fails, media stays
                self._incoming.put_nowait(None)

    def _on_delivery(self, delivery: Delivery) -> None:
        self.deliveries += 1
        actions = self._inbound.receive(self._views(), delivery.from_user, delivery.body)
        for action in actions:
            self._carry_out(action)

    def _carry_out(self, action: ib.Action) -> None:
        if isinstance(action, ib.Drop):
            self.count(action.reason)
        elif isinstance(action, ib.Post):
            call = self._calls[action.call_id]
            call.peer_used_call_key = call.peer_used_call_key or action.call_keyed
            call.post(action.event)
        elif isinstance(action, ib.StartCall):
            self._start_incoming(action)
        elif isinstance(action, ib.SendBusy):
            self._spawn(self._send_busy(action))
        elif isinstance(action, ib.Warn):
            self.warnings.append(action.warning)
            del self.warnings[:-MAX_WARNINGS]
            if self._warning_queue.full():
                self._warning_queue.get_nowait()  # nobody is reading: keep the newest
            self._warning_queue.put_nowait(action.warning)
        elif isinstance(action, ib.SaveJournal) and self._journal is not None:
            self._journal.add(action.entry)

    def _start_incoming(self, action: ib.StartCall) -> None:
        ours = self._calls[action.replaces] if action.replaces is not None else None
        if ours is not None:
            ours.handle_now(ev.GlareLost())
        new = Call(
            self,
            role=Role.CALLEE,
            peer=action.peer,
            peer_key=action.peer_key,
            call_id=action.call_id,
            auto_accept=ours is not None,
        )
        if ours is not None:
            ours.replaced_by = new
        self._calls[action.call_id] = new
        new.start(action.offer)
        log.info("call %s: offer received", new.short_id)

    async def _send_busy(self, action: ib.SendBusy) -> None:
        sealer = CallSealer(
            self.config.identity, action.peer_key, action.call_id, self.config.hooks.clock
        )
        with contextlib.suppress(VoiceError, TimeoutError, OSError):
            await self.send_envelope(action.peer, sealer.seal(m.Busy()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _bounded(aw: Awaitable[Any], limit: float = 2 * CLOSE_TIMEOUT) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(aw, limit)
