"""One member's media in a group call's VideoRoom: our feed out, one PeerConnection per other
member's feed in, and who publishes now.

Why one subscriber PeerConnection per feed (not one with an m-line per feed, as
:class:`voice.group.member.MediaMember` does): members come and go, and a separate handle per
feed is added or closed on its own, with no renegotiation of the others. Members publish with
``display`` = their username, so a feed maps to a roster entry; Janus's word on that is only
routing (a frame still has to carry the right signature and SFrame key to be heard).
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

__all__ = ["FeedWatch", "RoomMedia"]

PUBLISH_S = 5.0  # a member admitted this long ago that never published is gone too

OnPayload = Callable[[bytes, int], None]  # (payload as Janus forwarded it, RTP timestamp)


class FeedWatch:
    """Which feeds to subscribe to and which members are gone, from one look at the publisher
    list (pure: the session polls Janus and passes the time in).

    A member is gone once its feed, seen before, is no longer listed (its Janus session went
    away), or when it has not published :data:`PUBLISH_S` after we first expected it to."""

    def __init__(self, *, publish_s: float = PUBLISH_S) -> None:
        self.publish_s = publish_s
        self.subscribed: dict[str, int] = {}  # user -> the feed we receive
        self._seen: set[str] = set()
        self._expected: dict[str, float] = {}  # user -> when we first expected its feed

    def look(
        self, feeds: dict[str, int], members: set[str], now: float
    ) -> tuple[list[tuple[str, int]], list[str]]:
        """(user, feed) pairs to subscribe to (new or replaced feeds), and the users gone."""
        for user in set(self._expected) - members:  # left the roster: forget them
            self.forget(user)
        wanted, gone = [], []
        for user in sorted(members):
            since = self._expected.setdefault(user, now)
            feed = feeds.get(user)
            if feed is not None:
                self._seen.add(user)
                if self.subscribed.get(user) != feed:
                    wanted.append((user, feed))
            elif user in self._seen or now > since + self.publish_s:
                gone.append(user)
                self.forget(user)
        return wanted, gone

    def forget(self, user: str) -> None:
        self._seen.discard(user)
        self._expected.pop(user, None)


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

    async def publishers(self) -> dict[str, int]:
        """display (username) -> feed id of everyone else publishing in the room now."""
        if self._lister is None:
            self._lister = VideoRoom(await self.session.attach())
        feeds = await self._lister.publishers(self.room)
        return {f.display: f.id for f in feeds if f.display and f.id != self.feed}

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
