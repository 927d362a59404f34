"""Bounded concealment: when the peer's packets stop, playout fades within 200 ms to comfort
noise at the level of the peer's pauses (silence if they were silent), instead of seconds of
Opus PLC, and resumes cleanly when they come back; short gaps (what random loss makes) are still
concealed at full level.

Deterministic: real Opus packets, a simulated clock (packet k arrives at k * 20 ms + 5 ms, the
tick that plays it 6 ms later, as the receiver's phase alignment puts it), and the receiver's own
per-tick step (:meth:`RtpReceiver.tick`) instead of its timer.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

import voice.media.receiver
from voice.audio.base import FRAME_SAMPLES, FRAME_SECONDS
from voice.media.jitter import JitterBuffer
from voice.media.opus import OpusDecoder, OpusEncoder
from voice.media.receiver import (
    COMFORT_MAX_RMS,
    CONCEAL_FULL_FRAMES,
    FADE_FRAMES,
    FADE_IN_SAMPLES,
    PHASE_LEAD,
    RtpReceiver,
    frame_rms,
    ramp,
)
from voice.media.sender import PAYLOAD_TYPE

SSRC = 0x5EED
NETWORK = 0.005
TONE_RMS = 8000 / np.sqrt(2)


class NullSink:
    async def write_frame(self, pcm: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


def _packets(
    count: int, *, loss_perc: int = 0, pause: range = range(0), hiss_rms: float = 0.0
) -> list[bytes]:
    """``count`` RTP packets of a 440 Hz tone (amplitude 8000), seq and timestamp from 0; the
    frames in ``pause`` carry background noise of ``hiss_rms`` instead."""
    packets = []
    hiss = np.random.default_rng(5)
    with OpusEncoder() as encoder:
        encoder.set_packet_loss_perc(loss_perc)
        for seq in range(count):
            t = (np.arange(FRAME_SAMPLES) + seq * FRAME_SAMPLES) / 48_000
            wave = 8000 * np.sin(2 * np.pi * 440 * t)
            if seq in pause:
                wave = hiss.normal(0.0, hiss_rms, FRAME_SAMPLES)
            pcm = np.rint(wave).astype("<i2").tobytes()
            packet = RtpPacket(
                payload_type=PAYLOAD_TYPE,
                sequence_number=seq,
                timestamp=seq * FRAME_SAMPLES,
                ssrc=SSRC,
                payload=encoder.encode(pcm),
            )
            packets.append(packet.serialize())
    return packets


def _play(packets: list[bytes], delivered: set[int]) -> tuple[RtpReceiver, list[bytes]]:
    """Tick k: packet k arrives (if delivered), then the tick plays; the frames played."""
    receiver = RtpReceiver(
        sink=NullSink(),
        decoder=OpusDecoder(),
        jitter=JitterBuffer(),
        remote_ssrc=SSRC,
        on_report_block=lambda _block: None,
    )
    receiver.playing = True
    frames = []
    for k, packet in enumerate(packets):
        arrival = k * FRAME_SECONDS + NETWORK
        if k in delivered:
            receiver.on_rtp(packet, arrival)
        pcm, _real = receiver.tick(arrival + PHASE_LEAD)
        frames.append(pcm)
    return receiver, frames


def _tick_time(k: int) -> float:
    return k * FRAME_SECONDS + NETWORK + PHASE_LEAD


def test_playout_fades_to_silence_within_200_ms_and_resumes_when_packets_return() -> None:
    packets = _packets(150)
    last, back = 49, 100  # packets 50..99 never arrive: a killed peer, an outage of a second
    delivered = set(range(last + 1)) | set(range(back, 150))
    receiver, frames = _play(packets, delivered)
    last_arrival = last * FRAME_SECONDS + NETWORK

    rms = [frame_rms(pcm) for pcm in frames]
    assert min(rms[10 : last + 1]) > 0.8 * TONE_RMS  # the tone, played
    # The first missing frames are concealed at full level (what a short loss needs; Opus's
    # own PLC lowers a tone's level by itself) ...
    full = rms[last + 1 : last + 1 + CONCEAL_FULL_FRAMES]
    assert min(full) > 0.1 * TONE_RMS
    # ... then the concealment fades out, frame by frame: no frame louder than the one before
    # (the deep PLC's own level wobbles: 406 then 407 on one CPU, from a gain 1/4 lower), the
    # last near silent ...
    fading = rms[last + 1 + CONCEAL_FULL_FRAMES : last + 1 + CONCEAL_FULL_FRAMES + FADE_FRAMES]
    assert all(b < 1.05 * a for a, b in itertools.pairwise(fading)), fading
    assert fading[-1] < 0.2 * fading[0], fading
    # ... and from 200 ms after the last packet on, until packets return, nothing is heard.
    quiet = [r for k, r in enumerate(rms[:back]) if _tick_time(k) >= last_arrival + 0.200]
    assert len(quiet) > 40 and max(quiet) < 1.0
    # Speech is back within two ticks of the first packet, and at full level after that.
    assert min(rms[back + 2 :]) > 0.8 * TONE_RMS
    resumed = next(k for k in range(back, 150) if rms[k] > 0)
    assert resumed <= back + 1
    first = np.frombuffer(frames[resumed], dtype="<i2").astype(np.int32)
    assert np.abs(first[:48]).max() < 400  # faded in from zero: no click
    counters = receiver.playout
    assert counters.faded == FADE_FRAMES
    assert counters.silenced >= 40
    assert counters.concealed == CONCEAL_FULL_FRAMES + FADE_FRAMES
    assert receiver.jitter_buffer.stats.resets == 0  # the buffer re-synced after the gap


@pytest.mark.parametrize("loss_perc", [0, 5])
def test_short_gaps_are_concealed_at_full_level_not_silenced(
    loss_perc: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    packets = _packets(120, loss_perc=loss_perc)
    lost = {20, 40, 41, 60, 61, 62, 90, 92, 94}
    receiver, frames = _play(packets, set(range(120)) - lost)
    counters = receiver.playout
    assert counters.silenced == 0 and counters.faded == 0
    assert counters.concealed + counters.fec_recovered >= len(lost)
    assert counters.concealed >= 3
    rms = [frame_rms(pcm) for pcm in frames]
    assert min(rms[10:]) > 0.05 * TONE_RMS  # every frame audible, the losses included
    # Exactly what unbounded concealment plays: bursts of up to 3 losses are left alone.
    monkeypatch.setattr(voice.media.receiver, "CONCEAL_FULL_FRAMES", 1_000_000)
    _receiver, unbounded = _play(packets, set(range(120)) - lost)
    assert frames == unbounded


def test_packets_back_in_the_middle_of_the_fade_fade_in_from_where_it_was() -> None:
    packets = _packets(80)
    # A gap of n packets is n + 1 missing frames without FEC (the tick that would rebuild the
    # last one from the next packet's FEC data conceals instead): back after 2 fading frames.
    gap = set(range(30, 30 + CONCEAL_FULL_FRAMES + 1))
    receiver, frames = _play(packets, set(range(80)) - gap)
    assert receiver.playout.faded == 2 and receiver.playout.silenced == 0
    rms = [frame_rms(pcm) for pcm in frames]
    assert min(rms[10:30]) > 0.8 * TONE_RMS and min(rms[45:]) > 0.8 * TONE_RMS
    resumed = 30 + CONCEAL_FULL_FRAMES + 2
    level = 1.0 - 2 / FADE_FRAMES  # where the fade had got to
    start = np.abs(np.frombuffer(frames[resumed], dtype="<i2")[:24].astype(np.int32)).max()
    assert start < 8000 * (level + 0.1)  # faded in from there, not a jump to full level


def test_ramp_is_continuous_and_exact_at_its_ends() -> None:
    pcm = np.full(FRAME_SAMPLES, 10_000, dtype="<i2").tobytes()
    out = np.frombuffer(ramp(pcm, 1.0, 0.6, FRAME_SAMPLES), dtype="<i2")
    assert out[-1] == 6000 and 9990 <= out[0] <= 10_000
    assert np.all(np.diff(out.astype(np.int32)) <= 0)
    back = np.frombuffer(ramp(pcm, 0.0, 1.0, FADE_IN_SAMPLES), dtype="<i2")
    assert back[0] < 50 and np.all(back[FADE_IN_SAMPLES - 1 :] == 10_000)


@pytest.mark.parametrize("hiss_rms", [25.0, 90.0])
def test_after_the_fade_comes_comfort_noise_at_the_level_of_the_peers_pauses(
    hiss_rms: float,
) -> None:
    pause, last, back = range(20, 50), 49, 100  # the peer pauses (background noise), then is gone
    packets = _packets(150, pause=pause, hiss_rms=hiss_rms)
    delivered = set(range(last + 1)) | set(range(back, 150))
    receiver, frames = _play(packets, delivered)
    rms = [frame_rms(pcm) for pcm in frames]
    background = float(np.median(rms[pause.start + 5 : last + 1]))  # the pause as decoded
    assert 0.3 * hiss_rms < background < 2.0 * hiss_rms
    gone = rms[last + 1 + CONCEAL_FULL_FRAMES + FADE_FRAMES + 1 : back]
    expected = min(background, COMFORT_MAX_RMS)
    assert len(gone) > 40
    assert all(0.7 * expected < r < 1.3 * expected for r in gone)  # not silence: noise, ...
    assert max(gone) <= 1.3 * COMFORT_MAX_RMS  # ... never loud ...
    spread = np.frombuffer(b"".join(frames[last + 20 : last + 30]), dtype="<i2")
    assert len(set(spread.tolist())) > 20  # ... and noise, not a constant or a tone
    assert receiver.playout.silenced >= len(gone)
