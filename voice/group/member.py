"""One member's media through Janus: a PeerConnection that publishes our sealed frames and one
that receives every other member's, each frame handed over still sealed.

Two PeerConnections, as the VideoRoom wants (a publisher handle and a subscriber handle). Both
negotiate Opus only, so the frames we hand aiortc travel under the payload type Janus expects;
both keep aiortc's DTLS-SRTP to Janus (hop by hop). Nothing here knows what a frame holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription

from voice.group.frames import EncodedAudioTrack, OnFrame, tap_receiver
from voice.group.janus import JanusError, JanusSession
from voice.group.videoroom import VideoRoom

__all__ = ["MediaMember", "OnFeedFrame", "opus_only"]

OnFeedFrame = Callable[[int, bytes, int], None]  # (feed id, sealed frame, RTP timestamp)


def opus_only(transceiver: RTCRtpTransceiver) -> None:
    """Offer Opus alone: the frames we hand aiortc are Opus, under the type Janus expects."""
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == "audio/opus"])


def _for_feed(feed: int, on_frame: OnFeedFrame) -> OnFrame:
    return lambda frame, rtp_timestamp: on_frame(feed, frame, rtp_timestamp)


class MediaMember:
    """Publish to and subscribe in one VideoRoom ``room`` over ``session``."""

    def __init__(self, session: JanusSession, room: int, *, display: str | None = None) -> None:
        self.session = session
        self.room = room
        self.display = display
        self.feed: int | None = None  # our publisher id, once published
        self._pcs: list[RTCPeerConnection] = []
        self._rooms: list[VideoRoom] = []

    async def publish(self, next_frame: Callable[[], bytes], *, e2ee: bool = True) -> int:
        """Join as publisher and send ``next_frame()`` every 20 ms; our feed id, once Janus
        has our PeerConnection up (others get "No such feed" before that).

        ``e2ee=False`` exists to show that a room requiring e2ee refuses us (JanusError)."""
        videoroom = await self._videoroom()
        joined = await videoroom.join_as_publisher(self.room, display=self.display)
        pc = self._pc()
        transceiver = pc.addTransceiver(EncodedAudioTrack(next_frame), direction="sendonly")
        opus_only(transceiver)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await videoroom.publish(pc.localDescription.sdp, e2ee=e2ee)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await videoroom.handle.wait_webrtc_up()  # only then can others subscribe to us
        self.feed = joined.id
        return joined.id

    async def subscribe(self, feeds: list[int], on_frame: OnFeedFrame) -> None:
        """Receive ``feeds`` on one PeerConnection; every frame goes to ``on_frame``, sealed."""
        videoroom = await self._videoroom()
        offer = await videoroom.subscribe(self.room, feeds)
        pc = self._pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            feed = offer.feeds.get(str(transceiver.mid))
            if feed is None:
                raise JanusError(f"Janus offered m-line {transceiver.mid} for no feed we know")
            opus_only(transceiver)
            tap_receiver(transceiver.receiver, _for_feed(feed, on_frame))
        await pc.setLocalDescription(await pc.createAnswer())
        await videoroom.start(pc.localDescription.sdp)

    async def close(self) -> None:
        """Leave the room (best effort) and close both PeerConnections."""
        for videoroom in self._rooms:
            with contextlib.suppress(JanusError):
                await videoroom.leave()
        for pc in self._pcs:
            await pc.close()

    async def _videoroom(self) -> VideoRoom:
        videoroom = VideoRoom(await self.session.attach())
        self._rooms.append(videoroom)
        return videoroom

    def _pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection()  # no ICE servers: host candidates only, as Janus has
        self._pcs.append(pc)
        return pc
