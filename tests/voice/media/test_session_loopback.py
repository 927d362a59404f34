"""MediaSession: two real sessions in one process on loopback, SRTP keyed end to end."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.errors import BadDescription, IceFailed, MediaError, MediaKeyError
from voice.media.loss import RandomLoss
from voice.media.rtcp import is_rtcp
from voice.media.session import MediaSession
from voice.media.srtp import SrtpContext

A_HZ, B_HZ = 440.0, 1000.0


def dominant_hz(frames: list[bytes]) -> float:
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * 48_000 / len(samples))


def peak(frames: list[bytes]) -> int:
    if not frames:
        return 0
    return int(np.abs(np.frombuffer(b"".join(frames), dtype="<i2").astype(np.int32)).max())


@dataclass
class Call:
    a: MediaSession
    b: MediaSession
    a_sink: MemorySink
    b_sink: MemorySink
    a_to_b: bytes  # a's tx key = b's rx key
    b_to_a: bytes
    a_wire: list[bytes] = field(default_factory=list)
    b_wire: list[bytes] = field(default_factory=list)

    def keys(self, *, b_rx: bytes | None = None) -> None:
        self.a.set_keys(tx=self.a_to_b, rx=self.b_to_a)
        self.b.set_keys(tx=self.b_to_a, rx=b_rx or self.a_to_b)

    async def connect(self) -> None:
        await asyncio.gather(
            self.a.connect(self.b.local_description()), self.b.connect(self.a.local_description())
        )


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    a_sink, b_sink = MemorySink(), MemorySink()
    a_wire: list[bytes] = []
    b_wire: list[bytes] = []
    a = await MediaSession.create(
        controlling=True, source=ToneSource(A_HZ), sink=a_sink, on_datagram_sent=a_wire.append
    )
    b = await MediaSession.create(
        controlling=False, source=ToneSource(B_HZ), sink=b_sink, on_datagram_sent=b_wire.append
    )
    c = Call(a, b, a_sink, b_sink, os.urandom(44), os.urandom(44), a_wire, b_wire)
    yield c
    await a.close()
    await b.close()


async def test_a_tone_each_way_is_heard_at_its_frequency(call: Call) -> None:
    await call.connect()
    call.keys()
    call.a.start()
    call.b.start()
    await asyncio.wait_for(asyncio.gather(call.a.first_audio.wait(), call.b.first_audio.wait()), 5)
    await asyncio.sleep(1.0)
    assert dominant_hz(call.b_sink.frames[-40:]) == pytest.approx(A_HZ, abs=5)
    assert dominant_hz(call.a_sink.frames[-40:]) == pytest.approx(B_HZ, abs=5)
    assert peak(call.b_sink.frames[-40:]) > 4000
    stats = call.b.stats()
    assert stats.ice_connected and stats.ice_connect_seconds is not None
    assert stats.rtp_packets_received > 0 and stats.auth_failures == 0
    assert stats.first_audio_at is not None and stats.playout.played > 0
    assert call.b.first_audio_at == stats.first_audio_at


async def test_the_wire_carries_no_opus_in_clear_and_one_audio_packet_size(call: Call) -> None:
    await call.connect()
    call.keys()
    call.a.start()
    call.b.start()
    await asyncio.sleep(1.5)  # long enough for RTCP reports too
    audio = [d for d in call.a_wire if not is_rtcp(d)]
    rtcp = [d for d in call.a_wire if is_rtcp(d)]
    assert len(audio) > 50 and rtcp
    assert {len(d) for d in audio} == {12 + 100 + 16}  # RTP header, CBR Opus, GCM tag
    assert call.a.stats().srtp_packet_sizes == (128,)
    assert call.b.stats().srtp_packet_sizes_received == (128,)
    # Recover the Opus payloads with the real key, then look for them on the wire.
    eavesdropper_with_key = SrtpContext(os.urandom(44), call.a_to_b)
    payloads = []
    for datagram in audio:
        plain = eavesdropper_with_key.unprotect(datagram)
        assert plain is not None
        packet = RtpPacket.parse(plain)
        assert packet.payload_type == 111 and len(packet.payload) == 100
        payloads.append(packet.payload)
    wire = b"".join(call.a_wire)
    for payload in payloads:
        for i in range(0, len(payload) - 8, 8):
            assert payload[i : i + 8] not in wire


async def test_wrong_rx_key_plays_no_audio_and_counts_auth_failures(call: Call) -> None:
    await call.connect()
    call.keys(b_rx=os.urandom(44))
    call.a.start()
    call.b.start()
    await asyncio.wait_for(call.a.first_audio.wait(), 5)  # the other direction works
    await asyncio.sleep(0.8)
    stats = call.b.stats()
    assert stats.auth_failures > 20
    assert stats.rtp_packets_received == 0
    assert not call.b.first_audio.is_set()
    assert stats.playout.played == stats.playout.fec_recovered == 0
    assert len(call.b_sink.frames) > 20 and peak(call.b_sink.frames) == 0


async def test_mute_sends_silence_and_muted_playout_plays_nothing(call: Call) -> None:
    """Mute and hold at the session: silence out, silence in, and the packets never stop."""
    call.b.set_playout_muted(True)  # before there is a receiver: kept for it
    await call.connect()
    call.keys()
    call.a.start()
    call.b.start()
    await asyncio.wait_for(call.a.first_audio.wait(), 5)
    await asyncio.sleep(1.0)
    stats = call.b.stats()
    assert stats.rtp_packets_received > 30 and stats.playout.withheld > 30  # a's tone arrives
    assert peak(call.b_sink.frames) == 0 and not call.b.first_audio.is_set()  # ... unplayed

    call.b.set_playout_muted(False)
    call.a.set_muted(True)
    await asyncio.sleep(1.0)
    assert peak(call.b_sink.frames[-30:]) < 50  # a sends digital silence
    assert dominant_hz(call.a_sink.frames[-40:]) == pytest.approx(B_HZ, abs=5)  # b does not

    call.a.set_muted(False)
    await asyncio.sleep(1.0)
    assert dominant_hz(call.b_sink.frames[-30:]) == pytest.approx(A_HZ, abs=5)
    assert peak(call.b_sink.frames[-30:]) > 4000
    assert call.a.stats().srtp_packet_sizes == (128,)  # muted or not: one size on the wire


async def test_ten_percent_loss_still_delivers_the_tone_with_fec() -> None:
    a_sink, b_sink = MemorySink(), MemorySink()
    a = await MediaSession.create(
        controlling=True, source=ToneSource(A_HZ), sink=a_sink, loss=RandomLoss(0.1, seed=1)
    )
    b = await MediaSession.create(controlling=False, source=ToneSource(B_HZ), sink=b_sink)
    try:
        k1, k2 = os.urandom(44), os.urandom(44)
        await asyncio.gather(a.connect(b.local_description()), b.connect(a.local_description()))
        a.set_keys(tx=k1, rx=k2)
        b.set_keys(tx=k2, rx=k1)
        a.start()
        b.start()
        await asyncio.sleep(3.0)
        sa, sb = a.stats(), b.stats()
        assert sa.packets_dropped_by_filter > 5
        assert sb.playout.fec_recovered > 0
        assert sb.packets_lost > 0
        assert dominant_hz(b_sink.frames[-100:]) == pytest.approx(A_HZ, abs=5)
        assert sa.remote_fraction_lost is not None  # b's RTCP receiver reports reached a
        assert sb.remote_fraction_lost == 0  # nothing was dropped from b to a
    finally:
        await a.close()
        await b.close()


async def test_nothing_is_sent_before_start_and_early_packets_are_dropped(call: Call) -> None:
    call.a.set_keys(tx=call.a_to_b, rx=call.b_to_a)  # before ICE
    call.a.start()  # before ICE too: waits for it
    await asyncio.sleep(0.1)
    assert call.a_wire == []
    await call.connect()
    await asyncio.sleep(0.5)
    assert call.b_wire == []  # b has neither keys nor start()
    assert call.b.stats().dropped_before_keys > 5
    assert call.b.stats().rtp_packets_received == 0
    call.b.set_keys(tx=call.b_to_a, rx=call.a_to_b)  # after ICE
    await asyncio.sleep(0.3)
    assert call.b_wire == [] and call.b_sink.frames == []  # keys alone do not start media
    call.b.start()
    await asyncio.wait_for(asyncio.gather(call.a.first_audio.wait(), call.b.first_audio.wait()), 5)


async def test_key_misuse_is_refused(call: Call) -> None:
    with pytest.raises(MediaKeyError):
        call.a.set_keys(tx=os.urandom(32), rx=os.urandom(44))
    call.a.set_keys(tx=call.a_to_b, rx=call.b_to_a)
    with pytest.raises(MediaError, match="already"):
        call.a.set_keys(tx=call.a_to_b, rx=call.b_to_a)


def _good_remote(session: MediaSession) -> dict[str, Any]:
    return session.local_description()


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("ssrc"),
        lambda d: d["ice"].update(pwd="x"),
        lambda d: d["ice"].update(candidates=["1 1 udp 1 evil.local 9 typ host"]),
        lambda d: d["codec"].update(name="PCMU"),
        lambda d: d["codec"].update(fmtp="cbr=1"),
        lambda d: d.update(extra=True),
    ],
)
async def test_malformed_remote_descriptions_are_refused(call: Call, breakage: Any) -> None:
    remote = _good_remote(call.b)
    breakage(remote)
    with pytest.raises(BadDescription):
        await asyncio.wait_for(call.a.connect(remote), 2)


async def test_ice_against_a_dead_peer_fails_within_its_timeout() -> None:
    session = await MediaSession.create(
        controlling=True, source=ToneSource(), sink=MemorySink(), ice_timeout=1.0
    )
    dead = await MediaSession.create(controlling=False, source=ToneSource(), sink=MemorySink())
    remote = dead.local_description()
    await dead.close()  # its port is closed now: nobody answers the checks
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        with pytest.raises(IceFailed):
            await session.connect(remote)
        assert loop.time() - began < 1.0 + 2.0
        with pytest.raises(MediaError):
            await session.connect(remote)  # one connect() per session
    finally:
        await session.close()


async def test_close_twice_leaves_no_task_running(call: Call) -> None:
    await call.connect()
    call.keys()
    call.a.start()
    call.b.start()
    await asyncio.wait_for(call.b.first_audio.wait(), 5)
    await call.a.close()
    await call.a.close()
    await call.b.close()
    await call.b.close()
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert leftovers == []
    assert call.a_sink.closed and call.b_sink.closed
    assert not call.a.stats().ice_connected
    with pytest.raises(MediaError):
        call.a.start()
    with pytest.raises(MediaError):
        await call.a.connect(call.b.local_description())


async def test_close_during_connect_does_not_hang() -> None:
    a = await MediaSession.create(controlling=True, source=ToneSource(), sink=MemorySink())
    dead = await MediaSession.create(controlling=False, source=ToneSource(), sink=MemorySink())
    remote = dead.local_description()
    await dead.close()
    try:
        task = asyncio.create_task(a.connect(remote))  # would wait for its 10 s timeout
        await asyncio.sleep(0.2)
        assert not task.done()
        await asyncio.wait_for(a.close(), 2)
        with pytest.raises(MediaError):
            await asyncio.wait_for(task, 2)
    finally:
        await a.close()
