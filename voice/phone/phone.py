"""The phone: one signaling session, the user's calls, and everything that spans calls.

    phone = await Phone.connect(config, audio=lambda call: (source, sink))
    call = await phone.call("bob")          # look up and pin bob's key, send the offer
    await call.wait_connected(timeout=30)   # bob accepted: audio runs, call.sas is set
    ...
    incoming = await phone.incoming()       # the next ringing call; accept() or decline()
    await phone.close()                     # hangs up, closes media, logs out

If the signaling session is lost (server restart, connection reset, no answer to keepalive
pings), calls still being set up fail (``signaling_lost``: they need the server), but a
CONNECTED call goes on: its media is peer to peer. The phone logs in again by itself
(:mod:`voice.phone.link`: backoff with jitter, same identity and pins), keeping its calls;
meanwhile a call's envelopes (its hangup) wait for the link up to ``request_timeout``.
:attr:`Phone.online`, :meth:`Phone.wait_online` and :meth:`Phone.next_link_change` tell the
user. When this machine's addresses change (:mod:`voice.phone.addresses`: Wi-Fi to LTE), the
phone logs in again at once if its session is stranded (its address gone, or no answer to a
ping within 3 s) rather than wait for keepalive to find it dead, so it stays reachable, and a
connected call's ICE restart (at its first silent check within a second of the change,
voice.call.health) reaches the peer as soon as the new session is up.

A fatal error (the login refused, another server, a certificate that does not verify, the
session replaced by a login elsewhere; or any loss with ``reconnect=False``) ends the phone:
:attr:`Phone.signaling_lost` / :meth:`Phone.wait_signaling_lost` say why, and no new call can
be placed or received until a new Phone connects.

Missed calls (cancelled or unanswered before we accepted, or answered ``busy`` because we were
in another call) are kept in :attr:`Phone.missed` and queued for :meth:`Phone.next_missed`.

Every delivery goes through the pure :class:`~voice.call.inbound.Inbound` (open, freshness,
pinned sender key, busy and glare), and the phone carries out the actions it returns. A changed
key refuses the call before it rings and raises a :class:`KeyChangedWarning`. Each call runs on
its own task (:mod:`voice.phone.call`). Bad, stale or misrouted deliveries are dropped and
counted in :attr:`Phone.dropped`, never shown to a call in progress.

About 500 lines: the user's handle on the phone (call, incoming, warnings, missed calls,
close) and the carrying out of the inbound actions share the table of calls; the journal
writer, the media set-up, the TURN relay, the signaling link and each call's outbox already
live in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from voice.audio.base import AudioSink, AudioSource
from voice.call import events as ev
from voice.call import inbound as ib
from voice.call import messages as m
from voice.call import routing
from voice.call.events import EndReason, FailReason, Outcome, Role
from voice.call.inbound import CallView, Inbound, KeyChangedWarning
from voice.call.outbound import CallSealer
from voice.crypto.contacts import TrustState
from voice.crypto.replay import ReplayGuard
from voice.errors import (
    AlreadyInCall,
    BadPublicKey,
    CallControlError,
    CallEnded,
    PhoneClosed,
    SignalingClientError,
    SignalingClosed,
    VoiceError,
)
from voice.media.iceservers import IceServers, interface_addresses
from voice.media.session import MediaSession
from voice.net.client import Delivery, SignalingClient
from voice.phone.addresses import AddressWatch, host_addresses, watch_addresses
from voice.phone.call import Call
from voice.phone.config import PhoneConfig
from voice.phone.history import CallRecord, record_for
from voice.phone.journal import JournalWriter
from voice.phone.link import LinkChange, SignalingLink
from voice.phone.media import CLOSE_TIMEOUT, open_session
from voice.phone.turn import IceServerCache, apply_relay_policy, server_on_loopback

__all__ = ["AudioFactory", "Call", "KeyChangedWarning", "LinkChange", "MissedCall", "Phone"]
__all__ += ["PhoneConfig"]

log = logging.getLogger("voice.phone")
AudioFactory = Callable[[Call], tuple[AudioSource, AudioSink]]
"""Makes the audio source and sink of a call; the call's MediaSession owns (and closes) them."""
MAX_ENDED_CALLS = 256  # ended calls remembered so their ids stay refused
MAX_WARNINGS = 64  # key-changed warnings kept (and queued) for the user, newest last
CLOSE_GRACE = 1.0  # seconds a closing phone gives its calls' last messages to go out
MAX_MISSED = 64  # missed calls kept (and queued) for the user, newest last
_MISSED_REASONS = {
    EndReason.CANCELLED_REMOTE: "cancelled",
    EndReason.NO_ANSWER: "no_answer",
    FailReason.SIGNALING_LOST: "signaling_lost",
}


@dataclass(frozen=True, slots=True)
class MissedCall:
    """A call we did not take: ``reason`` is cancelled, no_answer, busy (we were in another
    call) or signaling_lost (our link went down while it rang); ``at`` is wall time."""

    peer: str
    at: float
    reason: str
    call_id: bytes


class Phone:
    """A logged-in phone. Create it with :meth:`connect`; close it with :meth:`close`."""

    def __init__(self, config: PhoneConfig, link: SignalingLink, audio: AudioFactory) -> None:
        self.config = config
        self.auto_answer = False  # accept every incoming call at once (demo, benchmarks)
        self.dropped: Counter[str] = Counter()  # deliveries dropped, by reason
        self.deliveries = 0  # deliveries handled (dropped, delivered, rang or answered busy)
        self.warnings: list[KeyChangedWarning] = []
        self.missed: list[MissedCall] = []
        self._link = link
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
        self._missed_queue: asyncio.Queue[MissedCall] = asyncio.Queue(MAX_MISSED)
        self._closed = False
        self._lost: SignalingClientError | None = None
        self._lost_event = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._log_writes: set[asyncio.Task[None]] = set()  # call log records being written
        self._ice_servers = IceServerCache()  # TURN credentials, reused until half their TTL
        self._reader = asyncio.create_task(self._read_loop(), name=f"phone-{config.user}")
        fake = config.hooks.addresses
        # A session to a server on loopback outlives any change of the interfaces.
        self._renew_on_move = fake is not None or not server_on_loopback(config.server_url)
        self._watch = AddressWatch(fake or host_addresses)
        self._spawn(watch_addresses(self._watch, self._addresses_changed))

    @classmethod
    async def connect(
        cls, config: PhoneConfig, *, audio: AudioFactory, auto_answer: bool = False
    ) -> Phone:
        """Log in to the signaling server (SignalingUnreachable / LoginRefused on failure)."""
        phone = cls(config, await SignalingLink.open(config), audio)
        phone.auto_answer = auto_answer
        return phone

    @property
    def user(self) -> str:
        return self.config.user

    @property
    def server_name(self) -> str:
        """The name the signaling server gave in its login challenge (what we signed)."""
        return self._link.server

    @property
    def server_id(self) -> str:
        """The signaling server's deployment id from its login challenge (what we signed)."""
        return self._link.server_id

    @property
    def _client(self) -> SignalingClient:
        """The current (or last) signaling session."""
        return self._link.client

    @property
    def online(self) -> bool:
        """Logged in now (False while reconnecting, and for good after a fatal loss or close)."""
        return self._link.online and not self._closed

    @property
    def link_changes(self) -> list[LinkChange]:
        """Every time the link went offline or came back, oldest first (the last 64)."""
        return list(self._link.changes)

    @property
    def reconnects(self) -> int:
        """How many times the phone logged in again after losing its session."""
        return self._link.reconnects

    async def wait_online(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once logged in; TimeoutError; the fatal error (or PhoneClosed) if never."""
        if self._closed:
            raise PhoneClosed("the phone is closed")
        await self._link.wait_online(timeout)

    async def next_link_change(self, timeout: float | None = None) -> LinkChange:  # noqa: ASYNC109
        """The next time the link goes offline (reconnecting) or comes back online.

        A fatal loss is not a link change: see :meth:`wait_signaling_lost`.
        """
        return await self._link.next_change(timeout)

    async def next_missed(self, timeout: float | None = None) -> MissedCall:  # noqa: ASYNC109
        """The next missed call (also kept in :attr:`missed`)."""
        async with asyncio.timeout(timeout):
            return await self._missed_queue.get()

    @property
    def calls(self) -> list[Call]:
        """Every call this phone remembers (live and recently ended), oldest first."""
        return list(self._calls.values())

    @property
    def signaling_lost(self) -> SignalingClientError | None:
        """Why the phone lost its signaling session for good (None while it is up or
        reconnecting): a fatal error, or any loss with ``reconnect=False``. Show it to the user.

        A connected call survives it; nothing new can be dialed or received.
        """
        return self._lost

    async def wait_signaling_lost(self, timeout: float | None = None) -> SignalingClientError:  # noqa: ASYNC109
        """Return once the signaling session is lost for good (not when we close the phone,
        not while it reconnects)."""
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
        claims our own key belongs to ``user``, or names bytes that are not a key: nothing is
        pinned or sent), CallEnded (it ended before the offer could be sent), AlreadyInCall,
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
        key = await self._link.lookup(user)
        if key == self.config.identity.public_key:  # a lying (or broken) server: never pin it
            raise BadPublicKey(
                f"the server says {user!r} owns your own identity key; refusing the call"
            )
        try:
            self.config.contacts.check(user, key)  # KeyChangedError: refuse, nothing is sent
        except BadPublicKey:  # nobody could seal to it: pinned, it would lock the contact out
            raise BadPublicKey(
                f"the server's key for {user!r} is not a valid public key; refusing the call "
                f"(nothing was pinned)"
            ) from None
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
        # The offer reached the server (or it refused it), or the call ended before it could
        # be sent (then nothing will ever resolve first_send: never wait for it alone).
        ended: asyncio.Future[Any] = asyncio.ensure_future(call.wait_ended())
        first: asyncio.Future[Any] = call.first_send
        try:
            await asyncio.wait({first, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not call.first_send.done():
            raise CallEnded(call.outcome)
        try:
            call.first_send.result()
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
        # A hangup to a peer that is online goes out in milliseconds; one to a peer that went
        # offline would be retried (it may be reconnecting) for seconds, while the user waits
        # for the phone to close. The peer learns it from RTCP BYE or its media timeout anyway.
        grace = CLOSE_GRACE
        await _bounded(asyncio.gather(*(c.aclose(grace) for c in self._calls.values())))
        if self._journal is not None:
            await _bounded(self._journal.flush())
        if self._log_writes:
            await _bounded(asyncio.gather(*self._log_writes))
        for task in list(self._background):
            task.cancel()
        self._reader.cancel()  # first: no reconnection may start after this
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        with contextlib.suppress(Exception):
            await _bounded(self._link.close())
        self._incoming.put_nowait(None)

    async def __aenter__(self) -> Phone:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- PhoneLink: what calls use --------------------------------------------------------

    async def send_envelope(self, to: str, body: bytes) -> None:
        """Hand ``body`` to the server for ``to``; while reconnecting, wait for the link (all in
        ``request_timeout``: SignalingClosed after it, or the fatal error). To the peer of a
        call that connected, ``offline`` is tried again meanwhile: it may be reconnecting."""
        connected = any(c.peer == to and c.timings.connected_at for c in self._calls.values())
        await self._link.send(to, body, patient=connected)

    async def make_media(self, call: Call, *, controlling: bool) -> MediaSession:
        """The call's media session, with the server's STUN/TURN servers and the relay policy
        (``config.relay``) decided for this peer: ``auto`` relays all but VERIFIED contacts."""
        cfg = self.config
        servers = await self._ice_servers.get(self._client, cfg)
        contact = cfg.contacts.get(call.peer)
        verified = (
            contact is not None
            and contact.state is TrustState.VERIFIED
            and contact.public_key == call.peer_key
        )
        call.relay_verified = verified
        servers, relay_only = apply_relay_policy(cfg.relay, servers, verified_peer=verified)
        return await open_session(
            cfg, self._audio(call), controlling=controlling, servers=servers, relay_only=relay_only
        )

    async def restart_inputs(self, call: Call) -> tuple[list[str] | None, IceServers]:
        """What an ICE restart of ``call`` gathers on now: this machine's addresses as they are
        now (unless the config names them) and the ICE servers with current credentials, under
        the relay policy the call started with."""
        cfg = self.config
        addresses = None
        if cfg.host_addresses is None:
            addresses = interface_addresses(include_loopback=server_on_loopback(cfg.server_url))
        servers = await self._ice_servers.get(self._client, cfg)
        servers, _ = apply_relay_policy(cfg.relay, servers, verified_peer=call.relay_verified)
        return addresses, dataclasses.replace(servers, ca_file=cfg.ca_file)

    def on_ring(self, call: Call) -> None:
        if self.auto_answer or call.auto_accept:
            call.post(ev.UserAccept())
        else:
            self._incoming.put_nowait(call)

    def on_end(self, call: Call) -> None:
        outcome = call.outcome
        if outcome is not None and outcome.reason is not EndReason.GLARE_LOST:
            self._log_call(call, outcome)  # a lost glare call is not a call: the other one is
        if call.role is Role.CALLEE and call.timings.answered_at is None and outcome is not None:
            reason = _MISSED_REASONS.get(outcome.reason)
            if reason is not None:
                self._note_missed(MissedCall(call.peer, self.config.hooks.clock(), reason,
                                             call.call_id))  # fmt: skip
        ended = [cid for cid, c in self._calls.items() if c.state.terminal]
        for cid in ended[: max(0, len(ended) - MAX_ENDED_CALLS)]:
            del self._calls[cid]

    def count(self, what: str) -> None:
        self.dropped[what] += 1

    # ---- internals ------------------------------------------------------------------------

    def _log_call(self, call: Call, outcome: Outcome) -> None:
        """Record the call in the call log (its times are loop times; the log's is wall)."""
        if self.config.call_log is None:
            return
        t = call.timings
        now = asyncio.get_running_loop().time()
        began = t.dialed_at if t.dialed_at is not None else t.offered_at
        ended = t.ended_at if t.ended_at is not None else now
        self._write_log(
            record_for(
                server=self.config.server_url,
                peer=call.peer,
                incoming=call.role is Role.CALLEE,
                outcome=outcome,
                began_at=self.config.hooks.clock() - (now - (began if began is not None else now)),
                connected_for=None if t.connected_at is None else max(0.0, ended - t.connected_at),
            )
        )

    def _write_log(self, record: CallRecord) -> None:
        """Add ``record`` off the event loop (a file lock and two fsyncs must not stall the
        audio), after the records before it (the log keeps the order calls ended in); a
        closing phone waits for the writes still under way."""
        call_log = self.config.call_log
        assert call_log is not None
        before = list(self._log_writes)

        async def write() -> None:
            await asyncio.gather(*before, return_exceptions=True)
            try:
                await asyncio.to_thread(call_log.add, record)
            except (OSError, VoiceError) as exc:  # a full disk, a refused file: calls go on
                log.warning("could not write the call log: %s", exc)

        task = asyncio.create_task(write())
        self._log_writes.add(task)
        task.add_done_callback(self._log_writes.discard)

    def _note_missed(self, missed: MissedCall) -> None:
        log.info("missed a call (%s)", missed.reason)
        self.missed.append(missed)
        del self.missed[:-MAX_MISSED]
        if self._missed_queue.full():
            self._missed_queue.get_nowait()  # nobody is reading: keep the newest
        self._missed_queue.put_nowait(missed)

    def _addresses_changed(self) -> None:
        """This machine's addresses changed: each connected call restarts ICE if its audio
        stops, and the link logs in again now if its session is stranded (bound to an address
        that is gone, or not answering a ping: SignalingLink.renew_if_stranded)."""
        for call in self._calls.values():
            call.addresses_changed()
        if self._renew_on_move and not self._closed:
            self._spawn(self._link.renew_if_stranded(self._watch.current, "the network changed"))

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
        """Deliveries of one session after another, until the phone is closed or lost."""
        lost: SignalingClientError | None = None
        try:
            while not self._closed:
                lost = await self._read_session(self._link.client)
                if self._closed or not self._link.retries(lost):
                    return  # a fatal loss: see finally
                for call in self._calls.values():
                    call.post(ev.SignalingLost())  # the machine decides: setup fails, media stays
                self._link.went_offline(lost)
                await self._link.reconnect()
        except SignalingClientError as exc:  # a fatal error while logging in again
            lost = exc
        finally:
            if not self._closed:
                self._lose(lost or SignalingClosed("the signaling session ended", code=None))

    async def _read_session(self, client: SignalingClient) -> SignalingClientError:
        try:
            async for delivery in client:
                try:
                    self._on_delivery(delivery)
                except Exception:  # one bad delivery must never stop the phone
                    log.exception("dropped a delivery after an internal error")
                    self.count("internal")
        except SignalingClientError as exc:
            return exc
        return SignalingClosed("the signaling session ended", code=None)

    def _lose(self, lost: SignalingClientError) -> None:
        """For good: fail the calls in setup, wake every waiter with the reason."""
        self._lost = lost
        self._link.end(lost)
        log.warning(
            "signaling session lost (%s): calls in setup fail, a connected call goes on",
            type(lost).__name__,
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
            private_ice=action.private_ice,
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
        self._note_missed(MissedCall(action.peer, self.config.hooks.clock(), "busy",
                                     action.call_id))  # fmt: skip
        if self.config.call_log is not None and self.config.contacts.get(action.peer):
            # Only a contact's: anyone can send offers while we talk, and a stranger's would
            # flood the log (and push our real history out of it).
            at = self.config.hooks.clock()
            self._write_log(CallRecord(self.config.server_url, action.peer, "in", at, "missed"))
        with contextlib.suppress(VoiceError, TimeoutError, OSError):
            await self.send_envelope(action.peer, sealer.seal(m.Busy()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _bounded(aw: Awaitable[Any], limit: float = 2 * CLOSE_TIMEOUT) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(aw, limit)
