"""Group media through a real Janus VideoRoom: sealed Opus frames arrive exactly as sent.

Three members publish a tone each (Opus, then a toy ``protect`` standing in for SFrame) and
subscribe to the other two. Every receiver must get, through the receive tap, a gap-free run of
the very bytes the sender produced, in order, 960 RTP ticks apart; unprotected and decoded they
are the sender's tone. Janus forwards the frames without reading them (they are not even valid
Opus on the wire). A room that requires e2ee refuses a publisher that does not declare it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.support.janus import running_janus
from voice.group.janus import JanusError, JanusSession
from voice.group.janusd import JanusStartError, run_janus
from voice.group.member import MediaMember
from voice.group.videoroom import E2EE_REQUIRED, VideoRoom
from voice.media.opus import FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder

pytestmark = pytest.mark.timeout(60)

MAGIC = b"E2"
HEADER = struct.Struct("!2sBI")  # magic, sender key byte, frame counter
WANT_FRAMES = 100  # 2 s from every other member
WAIT_S = 30.0  # generous: a loaded 2-core machine runs three members and Janus


def protect(key: int, counter: int, frame: bytes) -> bytes:
    """The toy end-to-end layer: a header like SFrame's (key id, counter), then XOR."""
    return HEADER.pack(MAGIC, key, counter) + bytes(b ^ key for b in frame)


def unprotect(sealed: bytes) -> tuple[int, int, bytes]:
    magic, key, counter = HEADER.unpack_from(sealed)
    assert magic == MAGIC
    return key, counter, bytes(b ^ key for b in sealed[HEADER.size :])


@dataclass
class ToneSender:
    """Encodes a tone with our Opus binding and seals each frame; remembers what it sent."""

    hz: float
    key: int
    encoder: OpusEncoder = field(default_factory=OpusEncoder)
    sent: list[bytes] = field(default_factory=list)

    def next_frame(self) -> bytes:
        n = len(self.sent)
        t = (np.arange(FRAME_SAMPLES) + n * FRAME_SAMPLES) / SAMPLE_RATE
        pcm = (8000 * np.sin(2 * math.pi * self.hz * t)).astype("<i2").tobytes()
        sealed = protect(self.key, n, self.encoder.encode(pcm))
        self.sent.append(sealed)
        return sealed


def dominant_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


@dataclass
class FrameSink:
    """What one member's receive tap got, per feed; ``full`` once every feed has enough."""

    feeds: list[int]
    frames: dict[int, list[tuple[bytes, int]]] = field(default_factory=dict)
    full: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, feed: int, frame: bytes, rtp_timestamp: int) -> None:
        self.frames.setdefault(feed, []).append((frame, rtp_timestamp))
        if all(len(self.frames.get(f, ())) >= WANT_FRAMES for f in self.feeds):
            self.full.set()


async def test_three_members_get_each_others_sealed_frames_unchanged(tmp_path: Path) -> None:
    senders = [ToneSender(440.0, 0x5A), ToneSender(660.0, 0xA5), ToneSender(990.0, 0x3C)]
    async with running_janus(tmp_path) as janus, contextlib.AsyncExitStack() as stack:
        admin = await stack.enter_async_context(JanusSession.open(janus.url))
        room = await VideoRoom(await admin.attach()).create_room(require_e2ee=True)
        members = []
        for i in range(3):
            session = await stack.enter_async_context(JanusSession.open(janus.url))
            member = MediaMember(session, room, display=f"member-{i}")
            stack.push_async_callback(member.close)
            members.append(member)
        feeds = [await m.publish(s.next_frame) for m, s in zip(members, senders, strict=True)]
        sinks = [FrameSink([f for f in feeds if f != mine]) for mine in feeds]
        for member, sink in zip(members, sinks, strict=True):
            await member.subscribe(sink.feeds, sink)
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(*(sink.full.wait() for sink in sinks))

    for i, sink in enumerate(sinks):
        for j, feed in enumerate(feeds):
            if j == i:
                assert feed not in sink.frames, "Janus sent a member its own feed"
                continue
            frames = sink.frames[feed]
            first = unprotect(frames[0][0])[1]
            sent = senders[j].sent[first : first + len(frames)]
            assert [frame for frame, _ in frames] == sent, f"member {i} <- member {j}"
            steps = {(b - a) % 2**32 for (_, a), (_, b) in itertools.pairwise(frames)}
            assert steps == {960}, f"RTP timestamps of member {j}'s frames at member {i}"
            with OpusDecoder() as decoder:
                pcm = b"".join(decoder.decode(unprotect(frame)[2]) for frame, _ in frames)
            assert abs(dominant_hz(pcm[len(pcm) // 4 :]) - senders[j].hz) < 15


async def test_janus_refuses_a_publisher_without_e2ee_and_an_unknown_room(
    tmp_path: Path,
) -> None:
    sender = ToneSender(440.0, 0x11)
    async with running_janus(tmp_path) as janus, JanusSession.open(janus.url) as session:
        room = await VideoRoom(await session.attach()).create_room(require_e2ee=True)
        member = MediaMember(session, room)
        try:
            with pytest.raises(JanusError) as refused:
                await member.publish(sender.next_frame, e2ee=False)
            assert refused.value.code == E2EE_REQUIRED
            assert "end-to-end" in str(refused.value)
        finally:
            await member.close()
        with pytest.raises(JanusError) as no_room:
            await VideoRoom(await session.attach()).join_as_publisher(room + 1)
        assert no_room.value.code == 426  # JANUS_VIDEOROOM_ERROR_NO_SUCH_ROOM


async def test_a_janus_that_does_not_start_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JanusStartError, match=r"did not start \(exit code 1"):
        async with run_janus(tmp_path, binary="false", start_timeout=5.0):
            pass
    with pytest.raises(JanusStartError, match="not installed"):
        async with run_janus(tmp_path, binary="no-such-janus-binary"):
            pass


async def test_only_the_creator_with_the_room_secret_may_destroy_the_room(tmp_path: Path) -> None:
    async with running_janus(tmp_path) as janus, JanusSession.open(janus.url) as session:
        videoroom = VideoRoom(await session.attach())
        room = await videoroom.create_room(require_e2ee=True, pin="a-pin-1234", secret="s3cret")
        with pytest.raises(JanusError):  # someone who learnt the room id, without the secret
            await VideoRoom(await session.attach()).destroy_room(room)
        await videoroom.destroy_room(room, secret="s3cret")
