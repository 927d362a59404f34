"""Adversarial: packet sizes and times depend on the loss reports only, never on the speech.

Three real senders (real Opus at the ladder's CBR steps, real SRTP) run side by side on one real
media clock, with speech, a tone and digital silence as sources. Each gets the same scripted
sequence of RTCP loss reports, delivered after the same packet (as the receive path delivers
them, between two ticks). An eavesdropper sees the SRTP sizes, the send times and (inside the
header) the RTP timestamps: all three streams must be identical in all three, and a size may
change only on the packet right after a report that moved the ladder.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field

from aiortc.rtp import RtcpReceiverInfo, RtpPacket

from voice.audio.base import AudioSource
from voice.audio.sources import SilenceSource, ToneSource, WavFileSource
from voice.audio.speech import speech_sample
from voice.media.clock import INLINE, MediaClock
from voice.media.ladder import STEPS, BitrateLadder
from voice.media.opus import OpusEncoder, OpusSettings
from voice.media.sender import RtpSender
from voice.media.srtp import TAG_LENGTH, SrtpContext

SSRC = 0x5EC2E7
PACKETS = 240  # 4.8 s at 20 ms
HOLD_S = 1.0  # the ladder's hold, shortened so that a few seconds see it step down twice
# (after packet n, fraction_lost): up from 40k to 48k, 64k, then clean reports step it down again
SCRIPT = {
    10: 0,
    20: 5,
    40: 13,
    60: 26,
    80: 0,
    100: 0,
    120: 0,
    150: 0,
    170: 0,
    200: 0,
    220: 0,
}


@dataclass
class Trace:
    """What an eavesdropper on the path sees of one stream (plus the step, for the checks)."""

    sizes: list[int] = field(default_factory=list)  # SRTP packet sizes
    deadlines: list[float] = field(default_factory=list)  # send times: the ticks' deadlines
    timestamps: list[int] = field(default_factory=list)  # RTP timestamps
    bitrates: list[int] = field(default_factory=list)  # the step each packet was encoded at

    def relative(self) -> tuple[list[int], list[float], list[int]]:
        """Sizes, send times and RTP timestamps from the stream's first packet."""
        t0, ts0 = self.deadlines[0], self.timestamps[0]
        return (
            self.sizes[:PACKETS],
            [round(t - t0, 6) for t in self.deadlines[:PACKETS]],
            [(ts - ts0) & 0xFFFF_FFFF for ts in self.timestamps[:PACKETS]],
        )


async def run_stream(source: AudioSource, clock: MediaClock) -> Trace:
    """One real sender until it has sent PACKETS packets, fed SCRIPT's reports."""
    trace = Trace()
    srtp = SrtpContext(os.urandom(44), os.urandom(44))
    done = asyncio.Event()

    async def send_rtp(packet: bytes) -> None:
        deadline = sender.last_sent_at
        assert deadline is not None
        trace.sizes.append(len(srtp.protect(packet)))
        trace.deadlines.append(deadline)
        trace.timestamps.append(RtpPacket.parse(packet).timestamp)
        trace.bitrates.append(sender.bitrate)
        n = len(trace.sizes)
        if n in SCRIPT:  # the peer's report arrives between two ticks
            sender.on_report_block(RtcpReceiverInfo(SSRC, SCRIPT[n], 0, 0, 0, 0, 0))
        if n >= PACKETS:
            done.set()

    sender = RtpSender(
        source=source,
        encoder=OpusEncoder(OpusSettings()),
        send_rtp=send_rtp,
        ssrc=SSRC,
        initial_seq=1,
        initial_timestamp=123_456,
        initial_loss_perc=0,
        fec_on_demand=True,
        ladder=BitrateLadder(hold_s=HOLD_S),
        monotonic=lambda: 0.02 * len(trace.sizes),  # media time: the same for every stream
    )
    task = asyncio.create_task(sender.run_clocked(clock))
    await done.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    srtp.close()
    return trace


def expected_bitrates() -> list[int]:
    """The step of each packet, from the script alone (a fresh ladder, no audio at all)."""
    ladder = BitrateLadder(hold_s=HOLD_S)
    out: list[int] = []
    for n in range(1, PACKETS + 1):
        out.append(ladder.bitrate)
        if n in SCRIPT:
            ladder.on_report(SCRIPT[n], 0.02 * n)
    return out


async def test_sizes_and_times_follow_the_reports_never_the_audio() -> None:
    clock = MediaClock(asyncio.get_running_loop(), executor=INLINE)
    sources: dict[str, AudioSource] = {
        "speech": WavFileSource(speech_sample(), loop=True),
        "tone": ToneSource(440.0, amplitude=12_000.0),
        "silence": SilenceSource(),
    }
    traces = dict(
        zip(
            sources,
            await asyncio.gather(*(run_stream(s, clock) for s in sources.values())),
            strict=True,
        )
    )
    speech, tone, silence = (traces[k].relative() for k in ("speech", "tone", "silence"))
    assert speech == tone == silence  # sizes, send times and RTP timestamps alike

    sizes, times, stamps = speech
    # Each packet on its own tick of the 20 ms grid, its RTP timestamp saying when it was sent:
    # nothing bunched. (On a loaded machine the real clock may skip a late tick; the three
    # streams share it, so they skip it together and still look alike.)
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    assert steps and all(step > 0 and step % 960 == 0 for step in steps)
    assert times == [round(ts / 48_000, 6) for ts in stamps]
    rates = expected_bitrates()
    assert [t.bitrates for t in traces.values()] == [rates] * 3
    # SRTP = 12 bytes of RTP header + the CBR payload (bitrate * 20 ms) + the 16-byte GCM tag
    assert sizes == [12 + r // 400 + TAG_LENGTH for r in rates]
    assert set(rates) == {step.bitrate for step in STEPS}  # the script climbs every rung ...
    assert rates[-1] < 64_000  # ... and the clean reports bring it down again
    changes = [n for n in range(1, PACKETS) if sizes[n] != sizes[n - 1]]
    assert changes and all(n in SCRIPT for n in changes)  # only right after a report
