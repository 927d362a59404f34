"""One call in the shell: its task, its media, and its sealed messages.

Each :class:`Call` is a small actor around the pure :class:`~voice.call.machine.CallMachine`.
Inputs (opened messages, user actions, ICE and media outcomes, ticks) go through one inbox and
are fed to the machine one at a time by the call's own task. The effect loop has no
re-entrancy: the effects of a step run in order, the events they produce (RingingReady from
PrepareRinging, KeysReady from DeriveKeys, ...) are queued, and only then fed, one at a time.
Outgoing messages go through a second queue: a sender task seals each one
(:class:`~voice.call.outbound.CallSealer`) and hands it to the signaling server, so the machine
never waits for the network. When the call ends, the media session is closed and the call keys
are erased; the sender still flushes the last message.

Mute acts on the media at once (nothing is sent); hold and resume go through the machine
(:mod:`voice.call.hold`), which tells the peer, and HoldChanged silences both directions.

Never logged: keys, SAS, descriptions, audio, message contents.

About 570 lines, on purpose: the user's view of a call (accept, hangup, wait_connected, sas,
mute, hold) and the one task that drives it share every field; split in two, each half would
reach into the other's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from voice.call import events as ev
from voice.call import messages as m
from voice.call.events import Outcome, Role, State
from voice.call.inbound import CallView
from voice.call.machine import SENT_BY, CallMachine
from voice.call.outbound import CallSealer
from voice.crypto.continuity import ContinuityResult
from voice.crypto.sas import Sas
from voice.errors import (
    CallControlError,
    CallEnded,
    VoiceError,
)
from voice.media.iceservers import IceServers
from voice.media.session import MediaSession
from voice.media.stats import MediaStats
from voice.phone.config import PhoneConfig
from voice.phone.media import CLOSE_TIMEOUT, CallMedia
from voice.phone.outbox import CallOutbox
from voice.phone.restart import IceRestarter

__all__ = ["Call", "CallTimings", "Outcome", "PhoneLink"]

log = logging.getLogger("voice.phone")
TICK = 0.1  # seconds between deadline checks
_PATH_ERRORS = (ev.FailReason.ICE_FAILED.value, ev.FailReason.NO_MEDIA_PATH.value)
MAX_HOLD_CHANGES = 16  # hold changes queued for a UI that does not read them; newest kept


@dataclass
class CallTimings:
    """Event-loop times (``loop.time()``) of a call's milestones; None until they happen."""

    dialed_at: float | None = None  # caller: Phone.call() began
    offered_at: float | None = None  # callee: the offer arrived
    ringing_at: float | None = None  # the callee's phone rang (callee) / ringing arrived (caller)
    answered_at: float | None = None  # the callee accepted (callee) / accept arrived (caller)
    connected_at: float | None = None  # media started on this side
    first_audio_at: float | None = None  # first decoded frame from the peer was played out
    ended_at: float | None = None


class PhoneLink(Protocol):
    """What a call needs from its phone (voice.phone.phone.Phone)."""

    config: PhoneConfig

    async def send_envelope(self, to: str, body: bytes) -> None: ...
    async def make_media(self, call: Call, *, controlling: bool) -> MediaSession: ...
    async def restart_inputs(self, call: Call) -> tuple[list[str] | None, IceServers]: ...
    def on_ring(self, call: Call) -> None: ...
    def on_end(self, call: Call) -> None: ...
    def count(self, what: str) -> None: ...


class _Ready:
    """A step the machine already took synchronously; only its effects remain to carry out."""

    def __init__(self, step: ev.Step) -> None:
        self.step = step


Input = ev.Event | _Ready


class Call:
    """A call as the user sees it. Made by :class:`voice.phone.phone.Phone`."""

    def __init__(
        self,
        phone: PhoneLink,
        *,
        role: Role,
        peer: str,
        peer_key: bytes,
        call_id: bytes,
        auto_accept: bool = False,
        private_ice: bool = False,
    ) -> None:
        cfg = phone.config
        self.peer = peer
        self.role = role
        self.call_id = bytes(call_id)
        self.peer_key = bytes(peer_key)
        self.replaced_by: Call | None = None  # glare: the peer's call that replaced ours
        self.outcome: Outcome | None = None
        self.verified = False
        self._phone = phone
        self._cfg = cfg
        self.auto_accept = auto_accept  # glare: the user already asked for this call
        self.private_ice = private_ice  # callee of a stranger: candidates only after accept
        self._machine = CallMachine(
            role=role,
            peer=peer,
            call_id=call_id,
            no_answer_timeout=cfg.no_answer_timeout,
            ring_grace=cfg.ring_grace,
            connect_timeout=cfg.connect_timeout,
        )
        self._timings = CallTimings()
        self._media = CallMedia(cfg, peer=peer, peer_key=peer_key, call_id=call_id)
        self._continuity_warning: str | None = None
        self._continuity: ContinuityResult | None = None
        self._sas: Sas | None = None
        self._inbox: asyncio.Queue[tuple[Input, asyncio.Future[ev.Step | None] | None]]
        self._inbox = asyncio.Queue()
        self._sealer = CallSealer(cfg.identity, peer_key, call_id, cfg.hooks.clock)
        self.peer_used_call_key = False  # set by the phone when the peer's first one arrives
        self._outbox = CallOutbox(
            self._sealer,
            lambda body: phone.send_envelope(peer, body),
            self.post,
            name=self.short_id,
        )
        self.first_send = self._outbox.first_send
        self.relay_verified = False  # set by the phone: the relay policy saw a verified peer
        self._restarter = IceRestarter(
            lambda: self._media.session,
            lambda message: self._outbox.put(message, best_effort=True),
            lambda: phone.restart_inputs(self),
            controlling=role is Role.CALLER,
            timeout=cfg.ice_timeout,
            name=self.short_id,
        )
        self._notices: asyncio.Queue[str] = asyncio.Queue()
        self._hold_changes: asyncio.Queue[ev.HoldState] = asyncio.Queue(MAX_HOLD_CHANGES)
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    # ---- what the user sees -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def sas(self) -> Sas | None:
        """The short authentication string, once the call is accepted (ShowSas)."""
        return self._sas

    @property
    def continuity_warning(self) -> str | None:
        """Set when key continuity failed: show it to the user before they trust the call."""
        return self._continuity_warning

    @property
    def continuity(self) -> ContinuityResult | None:
        """What the key-continuity check found once the keys exist: MATCH means a secret kept
        from an earlier call is mixed into this call's keys (ZRTP's rs1/rs2), so a man in the
        middle would have had to be there, or hold that secret, ever since (None before)."""
        return self._continuity

    @property
    def timings(self) -> CallTimings:
        if self._timings.first_audio_at is None:
            self._timings.first_audio_at = self._media.current_first_audio()
        return self._timings

    @property
    def reconnecting(self) -> bool:
        """Connected, but the peer's audio stopped a moment ago: restarting ICE."""
        return self._media.reconnecting and not self.state.terminal

    @property
    def ice_restarts(self) -> int:
        """ICE restarts that brought a new path in."""
        return self._restarter.completed

    async def next_notice(self) -> str:
        """The next change the user should hear of: "reconnecting" or "reconnected"."""
        return await self._notices.get()

    @property
    def muted(self) -> bool:
        """Our microphone is muted: the peer gets digital silence (see :meth:`mute`)."""
        return self._media.muted

    def mute(self, muted: bool = True) -> None:
        """Mute (or unmute) our microphone, from any state until the call ends (CallEnded).

        The peer gets digital silence in place of our audio, in packets of the same size at
        the same times: nothing on the path tells that we muted, and the peer is not told."""
        if self.state.terminal:
            raise CallEnded(self.outcome)
        self._media.set_audio(muted=muted)

    @property
    def hold_state(self) -> ev.HoldState:
        """Who holds the call: ``local`` (we), ``remote`` (the peer), both or neither."""
        return self._machine.hold

    @property
    def on_hold(self) -> bool:
        """Held by either side: nothing is played, and silence is sent instead of our audio."""
        return self._machine.hold.held

    async def hold(self) -> None:
        """Put the connected call on hold and tell the peer (a sealed ``hold``).

        While held (by either side) both phones play nothing and send digital silence in place
        of the microphone, at the same packet size and rate, so the call stays healthy and the
        network sees no change. CallControlError unless the call is connected and not already
        held by us; CallEnded once it ended."""
        await self._hold_change(ev.UserHold())

    async def resume(self) -> None:
        """Take our hold off and tell the peer (a sealed ``resume``); the call stays held while
        the peer holds it too. CallControlError unless we hold the call."""
        await self._hold_change(ev.UserResume())

    async def next_hold_change(self) -> ev.HoldState:
        """The next change of :attr:`hold_state`, ours or the peer's (for the UI to show)."""
        return await self._hold_changes.get()

    def media_stats(self) -> MediaStats | None:
        """Live media counters (the last ones after the call ended); None before media exists."""
        return self._media.stats()

    def addresses_changed(self) -> None:
        """From the phone: this machine's addresses changed (a connected call restarts ICE)."""
        self._media.addresses_changed()

    async def accept(self) -> None:
        """Answer a ringing incoming call (audio starts once the keys are ready)."""
        await self._user(ev.UserAccept())

    async def decline(self) -> None:
        await self._user(ev.UserDecline())

    async def hangup(self) -> None:
        """End the call whatever its state: cancels while dialing, declines while ringing."""
        if not self.state.terminal:
            await self._user(ev.UserHangup())

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once media runs; CallEnded(outcome) if the call ends first; TimeoutError."""
        async with asyncio.timeout(timeout):
            await _first(self._connected.wait(), self._ended.wait())
        if not self._connected.is_set():
            raise CallEnded(self.outcome)

    async def wait_ended(self, timeout: float | None = None) -> Outcome:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await self._ended.wait()
        assert self.outcome is not None
        return self.outcome

    def mark_verified(self) -> None:
        """The users compared the SAS aloud and it matched: verify the contact, keep continuity.

        The retained secret is stored only while the call's keys exist (not after it ended).
        Refused (CallControlError) before this call showed a SAS: there was nothing to compare.
        """
        if self._sas is None:
            raise CallControlError("no SAS was shown on this call yet: there is nothing to verify")
        contacts = self._cfg.contacts
        contact = contacts.get(self.peer)
        if contact is None or contact.public_key != self.peer_key:
            raise CallControlError(
                f"{self.peer}'s pinned key is no longer the one this call used: nothing verified"
            )
        contacts.mark_verified(self.peer)
        self.verified = True
        keys = self._media.keys
        if keys is not None and self._sas is not None:
            contacts.store_retained(self.peer, keys.next_retained, key=self.peer_key)

    def __repr__(self) -> str:
        return f"Call({self.role.value}, peer={self.peer!r}, {self.short_id}, {self.state.name})"

    @property
    def short_id(self) -> str:
        return self.call_id[:4].hex()

    # ---- driven by the phone ----------------------------------------------------------------

    async def prepare_dial(self) -> ev.UserDial:
        """Caller: make the media session and key agreement; the offer is not sent yet."""
        session = await self._phone.make_media(self, controlling=True)
        return self._media.dial(session)

    def start(self, first: ev.UserDial | m.Offer) -> None:
        """Feed the first input synchronously (so routing sees the new state at once), then run.

        ``first`` is UserDial (caller) or the Offer (callee).
        """
        now = asyncio.get_running_loop().time()
        if isinstance(first, m.Offer):
            self._timings.offered_at = now
            step = self._machine.receive(now, self.call_id, first)
        else:
            step = self._machine.handle(now, first)
        self._inbox.put_nowait((_Ready(step), None))
        self._runner = asyncio.create_task(self._run(), name=f"call-{self.short_id}")
        self._outbox.start()

    def handle_now(self, event: ev.LocalEvent) -> None:
        """Feed a local event at once (glare); its effects run in order on the call's task."""
        if self.state.terminal:
            return
        step = self._machine.handle(asyncio.get_running_loop().time(), event)
        self._inbox.put_nowait((_Ready(step), None))

    def post(self, event: ev.Event) -> asyncio.Future[ev.Step | None]:
        """Queue an input for the call's task; the future resolves once it was handled."""
        fut: asyncio.Future[ev.Step | None] = asyncio.get_running_loop().create_future()
        if self._ended.is_set():
            fut.set_result(None)
        else:
            self._inbox.put_nowait((event, fut))
        return fut

    async def discard(self) -> None:
        """Drop a call that was prepared but never started."""
        await self._release()

    async def aclose(self, grace: float = CLOSE_TIMEOUT) -> None:
        """Stop the tasks and release everything; idempotent. The call's own task gets
        CLOSE_TIMEOUT to finish (it closes the media: devices, TURN allocations); messages
        still queued (the hangup) get ``grace`` seconds to be delivered."""
        for task, limit in ((self._runner, CLOSE_TIMEOUT), (self._outbox.task, grace)):
            if task is not None and not task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), limit)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._release()

    # ---- the call's task ----------------------------------------------------------------------

    async def _user(self, event: ev.LocalEvent) -> None:
        if self.state.terminal:
            raise CallEnded(self.outcome)
        await self.post(event)

    async def _hold_change(self, event: ev.UserHold | ev.UserResume) -> None:
        hold = isinstance(event, ev.UserHold)
        if self.state.terminal:
            raise CallEnded(self.outcome)
        if self.state is not State.CONNECTED:
            raise CallControlError(f"only a connected call can be held (it is {self.state.value})")
        if self.hold_state.local == hold:
            why = "the call is already on hold" if hold else "we are not holding the call"
            raise CallControlError(why)
        step = await self.post(event)
        if step is None:
            raise CallEnded(self.outcome)
        if not step.ok:
            raise CallControlError(f"cannot {'hold' if hold else 'resume'}: {step.rejected}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + TICK
        try:
            # Until EndCall ran, not merely until the machine is terminal: a step handle_now()
            # took (glare) may still wait in the inbox behind inputs the machine now refuses.
            while not self._ended.is_set():
                try:
                    item, fut = await asyncio.wait_for(
                        self._inbox.get(), max(0.0, next_tick - loop.time())
                    )
                except TimeoutError:
                    next_tick = loop.time() + TICK
                    item, fut = self._watch_media(loop.time()), None
                step: ev.Step | None = None
                try:
                    step = await self._feed(item)
                finally:
                    if fut is not None and not fut.done():
                        fut.set_result(step)
        except Exception:
            log.exception("call %s: internal error; ending the call", self.short_id)
            with contextlib.suppress(Exception):
                if not self.state.terminal:
                    await self._feed(ev.UserHangup())
        finally:
            if not self._ended.is_set():  # cancelled, or the machine could not end it
                self.outcome = self.outcome or Outcome(ev.FailReason.MEDIA_FAILED, "internal")
                await self._finish()
            while not self._inbox.empty():
                _, fut = self._inbox.get_nowait()
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _watch_media(self, now: float) -> ev.LocalEvent:
        """A tick: the media watch's event if it has one; notices and restarts on the side."""
        result = self._media.watch(now, connected=self.state is State.CONNECTED)
        if result is None:
            return ev.Tick()
        if result.notice is not None:
            log.info("call %s: %s", self.short_id, result.notice)
            self._notices.put_nowait(result.notice)
        if result.restart:
            self._spawn(self._restarter.start(), "restart")
        return result.event or ev.Tick()

    async def _feed(self, item: Input) -> ev.Step | None:
        """Feed one input, then the events its effects produced, in order; return its Step."""
        pending: deque[Input] = deque([item])
        first: ev.Step | None = None
        while pending:
            step = self._step(pending.popleft())
            first = first or step
            if not step.ok:
                continue
            self._rekey()
            for effect in step.effects:
                follow = await self._do(effect)
                if follow is not None:
                    pending.append(follow)
        return first

    def _rekey(self) -> None:
        """Seal with the call's own key as soon as the agreement says the peer has it."""
        if not self._sealer.call_keyed:
            key = self._media.agreement.sealing_key(connected=self.state is State.CONNECTED)
            if key is not None:
                self._sealer.use_call_key(key)

    def view(self) -> CallView:
        """What the phone's inbound decision needs to know of this call."""
        return CallView(
            self.call_id,
            self.peer,
            self.peer_key,
            self.role,
            self.state,
            self._media.agreement.opening_key(),
            self.peer_used_call_key,
            self._connected_for(),
        )

    def _connected_for(self) -> float | None:
        connected_at = self._timings.connected_at
        if self.state is not State.CONNECTED or connected_at is None:
            return None
        return asyncio.get_running_loop().time() - connected_at

    def _step(self, item: Input) -> ev.Step:
        now = asyncio.get_running_loop().time()
        if isinstance(item, _Ready):
            step = item.step
        elif type(item) in SENT_BY:
            step = self._machine.receive(now, self.call_id, item)  # type: ignore[arg-type]
        else:
            step = self._machine.handle(now, item)  # type: ignore[arg-type]
        if not step.ok:
            self._phone.count("rejected")
            log.debug("call %s: %s refused: %s", self.short_id, type(item).__name__, step.rejected)
        elif isinstance(item, ev.UserAccept | m.Accept):
            self._timings.answered_at = now
        return step

    async def _do(self, fx: ev.Effect) -> ev.LocalEvent | None:
        """Carry out one effect; return the event it produced for the machine, if any."""
        now = asyncio.get_running_loop().time()
        if isinstance(fx, ev.SendMessage):
            # A hold change that cannot reach the peer must not end the call: ours is applied.
            self._outbox.put(fx.message, best_effort=isinstance(fx.message, m.Hold | m.Resume))
        elif isinstance(fx, ev.PrepareRinging):
            return await self._prepare_ringing(fx.offer)
        elif isinstance(fx, ev.StartIce):
            self._spawn(self._connect_ice(fx.remote_description), "ice")
        elif isinstance(fx, ev.DeriveKeys):
            result = self._media.derive(fx)
            if self._media.keys is not None:
                self._continuity_warning = self._media.keys.continuity_warning
                self._continuity = self._media.keys.continuity
            return result
        elif isinstance(fx, ev.Ring | ev.Ringback):
            self._timings.ringing_at = now
            log.info("call %s: ringing", self.short_id)
            if isinstance(fx, ev.Ring):
                self._phone.on_ring(self)
        elif isinstance(fx, ev.StartMedia):
            self._media.start(now)
            self._timings.connected_at = now
        elif isinstance(fx, ev.ShowSas):
            self._show_sas()
        elif isinstance(fx, ev.SendCandidates):
            self._outbox.put(self._media.candidates())
        elif isinstance(fx, ev.RestartIce):
            self._spawn(self._restarter.receive(fx.message), "restart")
        elif isinstance(fx, ev.HoldChanged):
            self._hold_changed(fx.state)
        elif isinstance(fx, ev.EndCall):
            detail = fx.detail
            if fx.reason in (ev.FailReason.ICE_FAILED, ev.FailReason.NO_MEDIA_PATH):
                detail = detail or self._media.attempted()
            elif fx.reason is ev.FailReason.REMOTE_ERROR and detail in _PATH_ERRORS:
                detail = f"{detail}; {self._media.attempted()}"  # what we tried, too
            if fx.reason is ev.EndReason.HANGUP_LOCAL:
                await self._media.say_bye()  # reaches the peer even if the server cannot
            self.outcome = Outcome(fx.reason, detail)
            await self._finish()
        # StopRinging / StopMedia: nothing rings here; EndCall closes the media session.
        return None

    async def _prepare_ringing(self, offer: m.Offer) -> ev.LocalEvent:
        try:
            session = await self._phone.make_media(self, controlling=False)
        except (VoiceError, OSError, TimeoutError) as exc:
            log.warning("call %s: cannot prepare media (%s)", self.short_id, type(exc).__name__)
            return ev.UserDecline()
        return self._media.ring(session, offer, private=self.private_ice)

    def _hold_changed(self, state: ev.HoldState) -> None:
        self._media.set_audio(held=state.held)
        log.info("call %s: hold: local %s, remote %s", self.short_id, state.local, state.remote)
        if self._hold_changes.full():
            self._hold_changes.get_nowait()  # nobody is reading: keep the newest
        self._hold_changes.put_nowait(state)

    def _show_sas(self) -> None:
        keys = self._media.keys
        assert keys is not None
        self._sas = keys.sas
        self._connected.set()
        log.info("call %s: connected", self.short_id)
        self._cfg.contacts.note_connected(self.peer, self.peer_key)
        self._media.keep_continuity_if_earned()

    async def _connect_ice(self, remote: dict[str, Any]) -> None:
        self.post(await self._media.connect_ice(remote))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"{name}-{self.short_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self) -> None:
        assert self.outcome is not None
        self._timings.ended_at = asyncio.get_running_loop().time()
        log.info("call %s: ended: %s", self.short_id, self.outcome.reason.value)
        self._outbox.close()  # the last message still goes out
        await self._release()
        self._ended.set()
        self._phone.on_end(self)

    async def _release(self) -> None:
        """Close the media session and erase the keys; idempotent."""
        for task in list(self._tasks):
            task.cancel()
        await self._media.release()
        self._timings.first_audio_at = self._timings.first_audio_at or self._media.first_audio_at


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
