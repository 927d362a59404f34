"""One member's media in a group call's VideoRoom: our feed out, one PeerConnection per other
member's feed in, and who publishes now.

Why one subscriber PeerConnection per feed (not one with an m-line per feed, as
:class:`voice.group.member.MediaMember` does): members come and go, and a separate handle per
feed is added or closed on its own, with no renegotiation of the others. Members publish with
``display`` = their username; that is only a claim, and the frames a feed carries decide which
member's it is (:class:`FeedWatch`): a frame still has to carry the right signature and SFrame
key to be heard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCSessionDescription

from voice.group.frames import EncodedAudioTrack, tap_receiver
from voice.group.janus import JanusError, JanusSession
from voice.group.member import opus_only
from voice.group.videoroom import VideoRoom

__all__ = ["FeedWatch", "Look", "RoomMedia"]

PUBLISH_S = 5.0  # a member admitted this long ago that never published is gone too

OnPayload = Callable[[bytes, int], None]  # (payload as Janus forwarded it, RTP timestamp)


MAX_CANDIDATES = 4  # feeds under one member's name received at once, while none is proven
TRIAL_PAYLOADS = 100  # payloads (2 s) an unproven candidate gets before another takes its turn
BENCH_S = 10.0  # how long a candidate that proved nothing waits before its next turn


@dataclass(frozen=True)
class Look:
    """What one look at the publisher list asks for."""

    subscribe: list[tuple[str, int]]  # (member, feed) to receive
    unsubscribe: list[int]  # feeds to stop receiving
    gone: list[str]  # members gone from the room


class FeedWatch:
    """Which feeds to receive and which members are gone, from one look at the publisher list
    (pure: the session polls Janus and passes the time in).

    A feed's ``display`` is only a claim: anyone in the room (any member, with the room's pin)
    can publish under another member's name. So every feed listed under a member's name is a
    candidate (up to :data:`MAX_CANDIDATES` at once), and frames decide: a feed that carried one
    of that member's signed frames is *proven* and the other candidates are dropped; one that
    carried another member's frames is false for good. Copies of the member's real frames are
    harmless (the SFrame replay window refuses the second copy). Without a proven feed and with
    more candidates than slots, one that had :data:`TRIAL_PAYLOADS` without proving anything is
    benched for :data:`BENCH_S` so that every candidate gets its turn: decoys cannot crowd out
    the real feed.

    A member is gone once every feed under its name, seen before, is no longer listed (its Janus
    session went away), or when none appeared :data:`PUBLISH_S` after we first expected it."""

    def __init__(self, *, publish_s: float = PUBLISH_S) -> None:
        self.publish_s = publish_s
        self.subscribed: dict[int, str] = {}  # feed -> the member it is listed under
        self._seen: set[str] = set()
        self._expected: dict[str, float] = {}  # user -> when we first expected its feed
        self._proven: dict[str, int] = {}  # user -> the feed that carried its signed frames
        self._false: set[int] = set()  # feeds that carried another member's frames
        self._payloads: dict[int, int] = {}  # feed -> payloads since we subscribed
        self._benched: dict[int, float] = {}  # feed -> until when it waits

    def look(self, feeds: list[tuple[str, int]], members: set[str], now: float) -> Look:
        """What to receive now, given every (display, feed) Janus lists besides our own."""
        for user in set(self._expected) - members:  # left the roster: forget them
            self.forget(user)
        listed = {feed for _, feed in feeds}
        self._false &= listed  # a feed id that went away is forgotten with its verdicts
        self._benched = {f: t for f, t in self._benched.items() if f in listed}
        drop = [
            f
            for f, user in self.subscribed.items()
            if user not in members or f not in listed or f in self._false
        ]
        for feed in drop:
            self.stopped(feed)
        subscribe: list[tuple[str, int]] = []
        gone: list[str] = []
        for user in sorted(members):
            since = self._expected.setdefault(user, now)
            named = [f for display, f in feeds if display == user and f not in self._false]
            if not named:
                if user in self._seen or now > since + self.publish_s:
                    gone.append(user)
                    self.forget(user)
                continue
            self._seen.add(user)
            wanted = self._choose(user, named, now)
            for feed in [f for f, u in self.subscribed.items() if u == user and f not in wanted]:
                drop.append(feed)
                self.stopped(feed)
            for feed in wanted:
                if feed not in self.subscribed:
                    self.subscribed[feed] = user
                    self._payloads[feed] = 0
                    subscribe.append((user, feed))
        return Look(subscribe, drop, gone)

    def _choose(self, user: str, named: list[int], now: float) -> list[int]:
        proven = self._proven.get(user)
        if proven in named:
            return [proven]
        self._proven.pop(user, None)
        current = [f for f in named if self.subscribed.get(f) == user]
        if len(named) > MAX_CANDIDATES:  # more claims than slots: unproven ones take turns
            for feed in current:
                if self._payloads.get(feed, 0) >= TRIAL_PAYLOADS:
                    self._benched[feed] = now + BENCH_S
        waiting = [f for f in named if self._benched.get(f, 0.0) <= now]
        kept = [f for f in current if f in waiting]
        fresh = [f for f in waiting if f not in kept]
        return (kept + fresh)[:MAX_CANDIDATES]

    def heard(self, feed: int, who: str | None) -> None:
        """A payload came on ``feed``; ``who`` is the member whose signed frame it carried
        (None: it proved nothing, e.g. a key still on the way, a copy, or garbage)."""
        user = self.subscribed.get(feed)
        if user is None:
            return
        self._payloads[feed] = self._payloads.get(feed, 0) + 1
        if who == user:
            self._proven.setdefault(user, feed)
        elif who is not None:
            self._false.add(feed)

    def feeds_of(self, user: str) -> list[int]:
        return [f for f, u in self.subscribed.items() if u == user]

    def forget(self, user: str) -> None:
        self._seen.discard(user)
        self._expected.pop(user, None)
        self._proven.pop(user, None)

    def stopped(self, feed: int) -> None:
        """We no longer receive ``feed`` (dropped, or its subscription failed: tried again)."""
        self.subscribed.pop(feed, None)
        self._payloads.pop(feed, None)


@dataclass
class _Leg:
    room: VideoRoom
    pc: RTCPeerConnection

    async def close(self) -> None:
        with contextlib.suppress(JanusError):
            await self.room.leave()
        with contextlib.suppress(JanusError):
            await self.room.handle.detach()
        await self.pc.close()


class RoomMedia:
    """Our publisher and subscribers in ``room`` over one Janus ``session``."""

    def __init__(self, session: JanusSession, room: int, pin: str, display: str) -> None:
        self.session = session
        self.room = room
        self.pin = pin
        self.display = display
        self.feed: int | None = None
        self._publisher: _Leg | None = None
        self._lister: VideoRoom | None = None
        self.subscriptions: dict[int, _Leg] = {}  # feed id -> its leg

    async def publish(self, next_frame: Callable[[], bytes]) -> int:
        """Publish ``next_frame()`` every 20 ms (e2ee declared); our feed id once it is up."""
        videoroom = VideoRoom(await self.session.attach())
        joined = await videoroom.join_as_publisher(self.room, display=self.display, pin=self.pin)
        pc = RTCPeerConnection()
        self._publisher = _Leg(videoroom, pc)
        transceiver = pc.addTransceiver(EncodedAudioTrack(next_frame), direction="sendonly")
        opus_only(transceiver)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await videoroom.publish(pc.localDescription.sdp, e2ee=True)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await videoroom.handle.wait_webrtc_up()
        self.feed = joined.id
        return joined.id

    async def publishers(self) -> list[tuple[str, int]]:
        """(display, feed id) of everyone else publishing in the room now. A display is only a
        claim (see :class:`FeedWatch`)."""
        if self._lister is None:
            self._lister = VideoRoom(await self.session.attach())
        feeds = await self._lister.publishers(self.room)
        return [(f.display, f.id) for f in feeds if f.display and f.id != self.feed]

    async def subscribe(self, feed: int, on_payload: OnPayload) -> None:
        """Receive ``feed`` on a PeerConnection of its own; payloads go to ``on_payload``."""
        videoroom = VideoRoom(await self.session.attach())
        pc = RTCPeerConnection()
        self.subscriptions[feed] = _Leg(videoroom, pc)
        offer = await videoroom.subscribe(self.room, [feed], pin=self.pin)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            opus_only(transceiver)
            tap_receiver(transceiver.receiver, on_payload)
        await pc.setLocalDescription(await pc.createAnswer())
        await videoroom.start(pc.localDescription.sdp)

    async def unsubscribe(self, feed: int) -> None:
        leg = self.subscriptions.pop(feed, None)
        if leg is not None:
            await leg.close()

    async def close(self) -> None:
        """Leave the room (best effort) and close every PeerConnection."""
        for feed in list(self.subscriptions):
            await self.unsubscribe(feed)
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
