"""One member's group call, end to end: the roster machine, sender keys and the group code
over the signaling server (voice.group.control), sealed audio through Janus (voice.group.media).

The pure parts decide; this class carries out their effects (docs/group-calls.md):

- ``Send``: seal and send. A recipient the server says is offline is gone: the creator drops
  it (``member_gone``), a member whose creator is gone ends.
- ``JoinRoom``: publish our frames (encoded silence until :meth:`play`) and subscribe to every
  other member's feed, found by its ``display`` (the username) in Janus's publisher list, polled
  every :data:`POLL_S`; a display is only a claim, and the frames decide which feed is whose
  (voice.group.media.FeedWatch). The creator also treats a member whose feed disappears (its Janus
  session went away) as gone: it is out of everyone's roster within a few seconds.
- ``MembershipChanged``, ``Deliver``: the key layer (voice.group.keylayer) says which sender
  keys, commits and reveals to send to whom, and computes the group code; the media side
  follows the roster (frame signing keys of the epoch, feeds to drop). The creator also drops a
  member that has not published 5 s after it was expected (voice.group.media.FeedWatch).
- ``Ended``: leave the room and close the media.

Nothing from the network raises into the loops: refusals are counted (:attr:`dropped`).
Never logged: keys, nonces, the code, audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Self

from voice.audio.base import AudioSink, AudioSource
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.sas import Sas
from voice.errors import (
    KeyChangedError,
    RecipientOffline,
    SignalingClientError,
    UnknownUser,
)
from voice.group import messages as gm
from voice.group import roster as rs
from voice.group.control import GroupControl
from voice.group.frameauth import FrameSigner, FrameVerifier
from voice.group.janus import JanusError, JanusSession
from voice.group.keylayer import KeyLayer
from voice.group.keys import OwnSender, SenderKey
from voice.group.media import FeedWatch, RoomMedia
from voice.group.streams import Hearing, OwnStream
from voice.group.videoroom import VideoRoom
from voice.net.client import Delivery, SignalingClient

__all__ = ["GroupCall"]

log = logging.getLogger("voice.group")

CLOSE_STEP_S = 4.0  # a step of close() at most (the CLI's callers allow 15 s for all of it)
POLL_S = 0.5  # how often the publisher list is read (newcomers, vanished members)
TICK_S = 1.0


class GroupCall:
    """One user's group call; make it with :meth:`create` (the creator) or :meth:`listen`."""

    def __init__(
        self,
        control: GroupControl,
        state: rs.CreatorState | rs.MemberState,
        signer: FrameSigner,
        *,
        auto_accept: bool = False,
        sink_for: Callable[[str], AudioSink] | None = None,
        mixed: AudioSink | None = None,
        sender: OwnSender | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        janus_ca: Path | None = None,
    ) -> None:
        self.control = control
        self.janus_ca = janus_ca  # verifies a wss:// Janus (default: the system's CAs)
        self.state = state
        self.signer = signer
        self.auto_accept = auto_accept
        self.now = monotonic
        self.keys = KeyLayer(control.user, sender=sender)
        self.peers = self.keys.peers
        self.hearing = Hearing(self.peers, sink_for=sink_for, mixed=mixed, clock=monotonic)
        self.stream = None if sender is None else OwnStream(signer, sender)
        self.index: int | None = None if sender is None else sender.current.index
        self.invitation: gm.Invite | None = None  # the invite accept() answers
        self.tap: Callable[[str, bytes], None] | None = None  # sees payloads as Janus sent them
        self.ended = asyncio.Event()
        self.changed = asyncio.Event()  # set on every epoch and code change
        self.signaling_lost = False  # the server connection ended: no more roster changes
        self.media_lost = asyncio.Event()  # the connection to Janus ended: no more audio
        self.counters: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()
        self._media: RoomMedia | None = None
        self._watch = FeedWatch()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- making one ----

    @classmethod
    async def create(
        cls,
        client: SignalingClient,
        identity: Identity,
        contacts: ContactBook,
        janus_url: str,
        *,
        sink_for: Callable[[str], AudioSink] | None = None,
        mixed: AudioSink | None = None,
        janus_ca: Path | None = None,
    ) -> Self:
        """Open a group on the Janus at ``janus_url`` (a require_e2ee room with a random pin, and
        a random secret that only we hold: nobody else may edit, destroy or kick in it) and
        publish into it; we are member 0 of epoch 0."""
        signer = FrameSigner.generate()
        pin = secrets.token_urlsafe(18)
        room_secret = secrets.token_urlsafe(24)
        control = GroupControl(client, identity, contacts)
        stack = contextlib.AsyncExitStack()
        try:
            janus = await stack.enter_async_context(JanusSession.open(janus_url, ca_file=janus_ca))
            room = await VideoRoom(await janus.attach()).create_room(
                require_e2ee=True, pin=pin, secret=room_secret
            )
            state = rs.CreatorState(
                user=client.user,
                identity_key=identity.public_key,
                frame_key=signer.public_key,
                group=os.urandom(gm.GROUP_ID_BYTES),
                sfu_url=janus_url,
                room=room,
                pin=pin,
            )
        except BaseException:
            await stack.aclose()
            raise
        sender = OwnSender(SenderKey.fresh(0, 0))
        call = cls(
            control, state, signer, sink_for=sink_for, mixed=mixed, sender=sender, janus_ca=janus_ca
        )
        call._stack = stack
        call._media = RoomMedia(janus, room, pin, client.user)
        call._start()
        call._tasks.append(asyncio.create_task(call._publish()))
        return call

    @classmethod
    def listen(
        cls,
        client: SignalingClient,
        identity: Identity,
        contacts: ContactBook,
        *,
        auto_accept: bool = False,
        sink_for: Callable[[str], AudioSink] | None = None,
        mixed: AudioSink | None = None,
        janus_ca: Path | None = None,
    ) -> Self:
        """Wait for an invite (AskUser: :meth:`accept`, or at once with ``auto_accept``)."""
        state = rs.MemberState(user=client.user, identity_key=identity.public_key)
        control = GroupControl(client, identity, contacts)
        call = cls(
            control,
            state,
            FrameSigner.generate(),
            auto_accept=auto_accept,
            sink_for=sink_for,
            mixed=mixed,
            janus_ca=janus_ca,
        )
        call._start()
        return call

    def _start(self) -> None:
        self._tasks += [asyncio.create_task(self._receive()), asyncio.create_task(self._tick())]

    # ---- what the app sees ----

    @property
    def code(self) -> Sas | None:
        """This epoch's group security code, once every member's key and nonce are in."""
        return self.keys.code

    @property
    def code_failure(self) -> str | None:
        return self.keys.failure

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def members(self) -> tuple[gm.Member, ...]:
        return self.state.members

    @property
    def dropped(self) -> dict[str, int]:
        """Every refusal by reason: control (envelopes, roster) and media (forged frames...)."""
        total = Counter(self.control.dropped) + self.state.dropped + self.hearing.dropped
        total += self.keys.dropped
        return dict(total + self.counters)

    def play(self, source: AudioSource) -> None:
        """Send ``source`` to the group (once we are in it)."""
        if self.stream is None:
            raise RuntimeError("not in the group call yet")
        self.stream.play(source)

    async def until(self, predicate: Callable[[GroupCall], bool]) -> None:
        """Until ``predicate(self)`` holds (checked on every change and every 50 ms); bound it
        with ``asyncio.timeout``."""
        while not predicate(self):
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.05)

    # ---- local events ----

    async def invite(self, user: str) -> None:
        """Invite a contact (pinned now if it was not: looked up, TOFU)."""
        assert isinstance(self.state, rs.CreatorState)
        await self.control.peer_key(user)
        await self._step(self.state.invite(self.now(), user))

    async def remove(self, user: str) -> None:
        assert isinstance(self.state, rs.CreatorState)
        await self._step(self.state.remove(self.now(), user))

    async def accept(self) -> None:
        assert isinstance(self.state, rs.MemberState)
        await self._step(self.state.accept(self.now(), self.signer.public_key))

    async def decline(self) -> None:
        """Refuse the invite :attr:`invitation` (the creator is told)."""
        assert isinstance(self.state, rs.MemberState)
        await self._step(self.state.decline(self.now()))

    async def end(self) -> None:
        """End the call for everyone (creator) or leave it (member)."""
        if isinstance(self.state, rs.CreatorState):
            await self._step(self.state.end(self.now()))
        else:
            await self._step(self.state.leave(self.now()))

    async def close(self) -> None:
        """Stop everything here, without telling anyone (end() first to say goodbye). Each
        step gets :data:`CLOSE_STEP_S`: with the SFU or the network gone, a teardown that
        waits on them must not keep the program from ending (it is logged, by step)."""
        for task in self._tasks:
            task.cancel()
        await within(CLOSE_STEP_S, "the call's tasks", self._join_tasks())
        await within(CLOSE_STEP_S, "the media", self._close_media())
        await within(CLOSE_STEP_S, "the hearing", self.hearing.close())
        if self.stream is not None:
            self.stream.close()
        self.ended.set()

    async def _join_tasks(self) -> None:
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a loop that died of a bug: said, not raised at the end
                log.warning("group call: a task ended with %s", type(exc).__name__)

    # ---- the loops ----

    async def _receive(self) -> None:
        try:
            async for delivery in self.control.client:
                with self._survive("receive"):
                    await self._on_delivery(delivery)
        except SignalingClientError:
            pass
        self.signaling_lost = True  # media goes on; membership can no longer change
        self.changed.set()

    async def _on_delivery(self, delivery: Delivery) -> None:
        incoming = self.control.open(delivery)
        if incoming is None:
            return
        if isinstance(self.state, rs.CreatorState):
            step = self.state.receive(
                self.now(), incoming.sender, incoming.identity_key, incoming.message
            )
        else:
            step = self.state.receive(
                self.now(),
                incoming.sender,
                incoming.identity_key,
                incoming.message,
                pinned=incoming.pinned,
            )
        await self._step(step)

    @contextlib.contextmanager
    def _survive(self, loop: str) -> Iterator[None]:
        """A bug met by one input must not stop a loop (a deaf call, a frozen roster): it is
        counted and logged by type only (an exception's text could hold a value)."""
        try:
            yield
        except Exception as exc:
            self.counters["internal_error"] += 1
            log.warning("group call: %s loop: unexpected %s", loop, type(exc).__name__)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            with self._survive("tick"):
                await self._step(self.state.tick(self.now()))

    async def _watch_room(self) -> None:
        """Subscribe to members' feeds as they appear; the creator drops vanished ones."""
        while self._media is not None:
            with self._survive("room"):
                await self._look_at_room()
            await asyncio.sleep(POLL_S)

    async def _look_at_room(self) -> None:
        if self._media is None:
            return
        if self._media.session.closed:  # Janus went away: no media can flow any more
            self.counters["janus_lost"] += 1
            self.media_lost.set()
            self.changed.set()
            return
        try:
            feeds = await self._media.publishers()
        except JanusError:
            self.counters["janus_error"] += 1
            return
        members = {m.user for m in self.members if m.user != self.control.user}
        look = self._watch.look(feeds, members, self.now())
        for feed in look.unsubscribe:
            await self._media.unsubscribe(feed)
        for user, feed in look.subscribe:
            async with self._lock:
                await self._subscribe(user, feed)
        if isinstance(self.state, rs.CreatorState):
            for user in look.gone:
                await self._step(self.state.member_gone(self.now(), user))

    async def _subscribe(self, user: str, feed: int) -> None:
        media = self._media
        if media is None:  # the call ended meanwhile
            self._watch.stopped(feed)
            return

        def on_payload(payload: bytes, _rtp_timestamp: int) -> None:
            if self.tap is not None:
                self.tap(user, payload)
            self._watch.heard(feed, self.hearing.receive(payload))

        try:
            await media.subscribe(feed, on_payload)
        except JanusError:  # tried again at the next look
            self.counters["subscribe_failed"] += 1
            self._watch.stopped(feed)
            await media.unsubscribe(feed)
        except Exception:  # not received after all: tried again at the next look
            self._watch.stopped(feed)
            with contextlib.suppress(Exception):
                await media.unsubscribe(feed)
            raise

    # ---- effects ----

    async def _step(self, step: rs.Step) -> None:
        gone: list[str] = []
        async with self._lock:
            for effect in step.effects:
                await self._effect(effect, gone)
        self.changed.set()
        for user in dict.fromkeys(gone):  # offline recipients, once this step is done
            await self._gone(user)

    async def _gone(self, user: str) -> None:
        if isinstance(self.state, rs.CreatorState):
            step = self.state.member_gone(self.now(), user)
        elif user == self.state.creator:
            step = self.state.creator_gone(self.now())
        else:
            return
        await self._step(step)

    async def _effect(self, effect: rs.Effect, gone: list[str]) -> None:
        if isinstance(effect, rs.Send):
            await self._send(effect.to, effect.message, gone)
        elif isinstance(effect, rs.AskUser):
            self.invitation = effect.invite
            if self.auto_accept:
                assert isinstance(self.state, rs.MemberState)
                for inner in self.state.accept(self.now(), self.signer.public_key).effects:
                    await self._effect(inner, gone)
        elif isinstance(effect, rs.JoinRoom):
            await self._join_room(effect)
        elif isinstance(effect, rs.MembershipChanged):
            await self._membership(effect, gone)
        elif isinstance(effect, rs.Deliver):
            await self._deliver(effect, gone)
        elif isinstance(effect, rs.Ended):
            self.ended.set()
            await self._close_media()

    async def _send(self, to: str, message: gm.Message, gone: list[str]) -> None:
        try:
            await self.control.send(to, message)
        except (RecipientOffline, UnknownUser):
            gone.append(to)
        except (KeyChangedError, SignalingClientError, TimeoutError):
            self.counters["send_failed"] += 1

    async def _join_room(self, room: rs.JoinRoom) -> None:
        await self._close_media()
        try:
            janus = await self._stack.enter_async_context(
                JanusSession.open(room.sfu_url, ca_file=self.janus_ca)
            )
        except JanusError:  # the call goes on without media; the screen shows the counter
            self.counters["janus_unreachable"] += 1
            return
        self._media = RoomMedia(janus, room.room, room.pin, self.control.user)
        self._tasks.append(asyncio.create_task(self._publish()))

    async def _publish(self) -> None:
        if self._media is None:  # the call ended before we got here
            return
        try:
            await self._media.publish(self._next_frame)
        except Exception as exc:  # Janus refused, or its answer broke the PeerConnection:
            self.counters["publish_failed"] += 1  # no audio can flow, say so
            if not isinstance(exc, JanusError):
                log.warning("group call: publishing failed: %s", type(exc).__name__)
            self.media_lost.set()
            self.changed.set()
            return
        self._tasks.append(asyncio.create_task(self._watch_room()))

    def _next_frame(self) -> bytes:
        assert self.stream is not None  # set by our first roster, before any frame is asked
        return self.stream.next_frame()

    async def _close_media(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        if self._media is not None:
            media, self._media = self._media, None
            with contextlib.suppress(JanusError):
                await media.close()
        self._watch.subscribed.clear()
        with contextlib.suppress(JanusError):
            await self._stack.aclose()

    async def _membership(self, change: rs.MembershipChanged, gone: list[str]) -> None:
        """Media follows the roster; the key layer says what to send."""
        now = self.now()
        # A CHANGED key (pinned another one): we neither send to that member nor trust it.
        others = [
            m
            for m in change.members
            if m.user != self.control.user and self.control.pin(m.user, m.identity_key)
        ]
        for m in change.left:
            self._watch.forget(m.user)
            self.hearing.forget(m.index)
            for feed in self._watch.feeds_of(m.user):
                self._watch.stopped(feed)
                if self._media is not None:
                    await self._media.unsubscribe(feed)
        self.hearing.verifier = FrameVerifier({m.index: m.frame_key for m in others})
        self.hearing.names = {m.index: m.user for m in others}
        assert self.state.group is not None
        sends = self.keys.on_membership(
            self.state.group, change.epoch, change.members, others, change.joined, change.left, now
        )
        self.index = next(m.index for m in change.members if m.user == self.control.user)
        if self.stream is None:
            assert self.keys.sender is not None
            self.stream = OwnStream(self.signer, self.keys.sender)
        for to, message in sends:
            await self._send(to, message, gone)

    async def _deliver(self, deliver: rs.Deliver, gone: list[str]) -> None:
        for to, message in self.keys.on_deliver(deliver.message, self.now()):
            await self._send(to, message, gone)


async def within(seconds: float, what: str, step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` for at most ``seconds``; past that, cancel it and log ``what`` overran."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.warning("group call: closing %s took over %g s; left behind", what, seconds)
