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


MAX_CANDIDATES = 4  # feeds under one member's name received at once
TRIAL_S = 2.0  # how long an unproven candidate is received before another may take its turn
BENCH_S = 10.0  # how long it then waits; doubled at each new turn it wastes (at most 16x)


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
    candidate, up to :data:`MAX_CANDIDATES` received at once, and frames decide:

    - a feed that carried another member's signed frames is false, and dropped for good;
    - a feed that carried this member's signed frames is *proven* and kept. A decoy that relays
      copies of the member's real frames is proven too, but it cannot take anything away: the
      SFrame replay window keeps the first copy of each frame, whichever feed brought it, and
      the real feed (one hop shorter) usually brings it first;
    - unproven candidates take turns, by time and not by traffic (a decoy that sends nothing
      must not keep its slot): one received for :data:`TRIAL_S` while others wait is benched,
      for longer at each turn it wastes. One slot always turns while candidates wait, so
      decoys proven by copies cannot keep the real feed out either.

    A member is gone once every feed under its name, seen before, is no longer listed (its Janus
    session went away), or when none appeared :data:`PUBLISH_S` after we first expected it."""

    def __init__(self, *, publish_s: float = PUBLISH_S) -> None:
        self.publish_s = publish_s
        self.subscribed: dict[int, str] = {}  # feed -> the member it is listed under
        self._seen: set[str] = set()
        self._expected: dict[str, float] = {}  # user -> when we first expected its feed
        self._proven: dict[int, str] = {}  # feed -> the member whose signed frames it carried
        self._false: set[int] = set()  # feeds that carried another member's frames
        self._since: dict[int, float] = {}  # feed -> when we began to receive it
        self._benched: dict[int, float] = {}  # feed -> until when it waits
        self._turns: dict[int, int] = {}  # feed -> turns it wasted (its bench doubles)

    def look(self, feeds: list[tuple[str, int]], members: set[str], now: float) -> Look:
        """What to receive now, given every (display, feed) Janus lists besides our own."""
        for user in set(self._expected) - members:  # left the roster: forget them
            self.forget(user)
        listed = {feed for _, feed in feeds}
        for verdicts in (self._proven, self._benched, self._turns):  # feed ids that went away
            for feed in [f for f in verdicts if f not in listed]:
                del verdicts[feed]
        self._false &= listed
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
                    self._since[feed] = now
                    subscribe.append((user, feed))
        return Look(subscribe, drop, gone)

    def _choose(self, user: str, named: list[int], now: float) -> list[int]:
        proven = [f for f in named if self._proven.get(f) == user]
        others = [f for f in named if self._proven.get(f) != user]
        if others and len(proven) >= MAX_CANDIDATES:  # one slot keeps turning
            proven = proven[: MAX_CANDIDATES - 1]
        spare = MAX_CANDIDATES - len(proven)
        current = [f for f in others if self.subscribed.get(f) == user]
        if len(others) > spare:  # more unproven claims than slots: they take turns
            for feed in current:
                if now - self._since.get(feed, now) >= TRIAL_S:
                    turns = self._turns[feed] = min(self._turns.get(feed, 0) + 1, 5)
                    self._benched[feed] = now + BENCH_S * 2 ** (turns - 1)
        waiting = [f for f in others if self._benched.get(f, 0.0) <= now]
        kept = [f for f in current if f in waiting]
        fresh = [f for f in waiting if f not in kept]
        return proven + (kept + fresh)[:spare]

    def heard(self, feed: int, who: str | None) -> None:
        """A payload came on ``feed``; ``who`` is the member whose signed frame it carried
        (None: it proved nothing, e.g. a key still on the way, a copy, or garbage)."""
        user = self.subscribed.get(feed)
        if user is None:
            return
        if who == user:
            self._proven[feed] = user
            self._turns.pop(feed, None)
        elif who is not None:
            self._false.add(feed)

    def feeds_of(self, user: str) -> list[int]:
        return [f for f, u in self.subscribed.items() if u == user]

    def forget(self, user: str) -> None:
        self._seen.discard(user)
        self._expected.pop(user, None)
        for feed in [f for f, u in self._proven.items() if u == user]:
            del self._proven[feed]

    def stopped(self, feed: int) -> None:
        """We no longer receive ``feed`` (dropped, or its subscription failed: tried again)."""
        self.subscribed.pop(feed, None)
        self._since.pop(feed, None)


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
