"""The group audio path in memory: our stream's frames into another member's Hearing (real
Opus, SFrame and signatures, no network)."""

from __future__ import annotations

import asyncio

import pytest

from voice.audio.base import AudioSink
from voice.audio.sources import ToneSource
from voice.group import streams
from voice.group.frameauth import FrameSigner, FrameVerifier
from voice.group.keys import OwnSender, PeerKeys, SenderKey
from voice.group.streams import MAX_QUEUED, Hearing, OwnStream


class StuckSink(AudioSink):
    """A sink that never finishes writing (a device that hangs)."""

    async def write_frame(self, pcm: bytes) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


async def test_a_flood_from_one_member_cannot_grow_its_queue_past_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """...and a sink that hangs does not hang the call's end (bounded by CLOSE_S)."""
    monkeypatch.setattr(streams, "CLOSE_S", 0.2)
    signer, key = FrameSigner.generate(), SenderKey.fresh(1, 0)
    stream = OwnStream(signer, OwnSender(key))
    peers = PeerKeys()
    peers.install(key, 0.0)
    hearing = Hearing(peers, sink_for=lambda user: StuckSink(), clock=lambda: 0.0)
    hearing.verifier = FrameVerifier({1: signer.public_key})
    hearing.names = {1: "bob"}
    stream.play(ToneSource(440.0))
    await asyncio.sleep(0.05)
    frames = [stream.next_frame() for _ in range(3 * MAX_QUEUED)]
    try:
        assert all(hearing.receive(f) == "bob" for f in frames)  # every one authentic
        await asyncio.sleep(0)  # the writer takes the first frame and hangs on it
        queued = sum(q.qsize() for q in hearing._queues.values())
        assert queued <= MAX_QUEUED
        assert hearing.dropped["late"] >= 3 * MAX_QUEUED - MAX_QUEUED - 1
        assert hearing.frames["bob"] == 3 * MAX_QUEUED
    finally:
        stream.close()
        async with asyncio.timeout(5):
            await hearing.close()


async def test_receive_names_the_sender_of_an_authentic_frame_only() -> None:
    signer, key = FrameSigner.generate(), SenderKey.fresh(2, 0)
    stream = OwnStream(signer, OwnSender(key))
    peers = PeerKeys()
    peers.install(key, 0.0)
    hearing = Hearing(peers, clock=lambda: 0.0)
    hearing.verifier = FrameVerifier({2: signer.public_key})
    hearing.names = {2: "carol"}
    try:
        frame = stream.next_frame()
        assert hearing.receive(frame) == "carol"
        assert hearing.receive(frame) is None  # the same frame again: the replay window
        forged = FrameSigner.generate().sign(frame[:-64])
        assert hearing.receive(forged) is None
        assert hearing.dropped["bad_sframe"] == 1 and hearing.dropped["forged"] == 1
    finally:
        stream.close()
        await hearing.close()
