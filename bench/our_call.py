"""One two-way call of our client in this process, measured: speech one way, marks the other.

The caller sends the looped speech sample (scored with PESQ-WB at the callee); the callee sends
mouth-to-ear marks (timed at the caller). Both directions get the same loss, from a fresh model
per direction. The timing clock is the event loop's (``loop.time()``), for sources and sinks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.marks import MarkSource, mouth_to_ear
from voice.audio.base import FRAME_BYTES, AudioSource
from voice.audio.quality import QualityReport, compare
from voice.audio.sinks import MemorySink
from voice.audio.sources import WavFileSource
from voice.audio.speech import speech_sample
from voice.media.loss import LossModel
from voice.media.session import MediaSession, MediaStats


class RecordingSource:
    """Wraps a source and keeps what it produced, with the read times (for scoring)."""

    def __init__(self, inner: AudioSource, clock: Callable[[], float]) -> None:
        self._inner = inner
        self._clock = clock
        self.frames: list[bytes] = []
        self.read_times: list[float] = []

    async def read_frame(self) -> bytes | None:
        self.read_times.append(self._clock())
        frame = await self._inner.read_frame()
        self.frames.append(frame if frame is not None else bytes(FRAME_BYTES))
        return frame

    async def close(self) -> None:
        await self._inner.close()


def received_since(sink: MemorySink, since: float) -> tuple[bytes, list[float]]:
    """The sink's frames written at or after ``since``, and their write times."""
    keep = [i for i, t in enumerate(sink.arrivals) if t >= since]
    return b"".join(sink.frames[i] for i in keep), [sink.arrivals[i] for i in keep]


def score_speech(sent: bytes, received: bytes) -> QualityReport:
    return compare(sent, received, max_lag_s=1.5)


@dataclass
class CallResult:
    quality: QualityReport
    m2e: list[float]
    marks_sent: int
    setup_to_first_audio: float | None  # caller create() to the callee's first decoded frame
    start_to_first_audio: float | None  # caller start() to the callee's first decoded frame
    cpu_per_call_second: float
    caller: MediaStats
    callee: MediaStats

    def summary(self) -> dict[str, Any]:
        return {
            "pesq_wb": self.quality.pesq_wb,
            "correlation": self.quality.correlation,
            "m2e_ms": [round(1000 * d, 2) for d in self.m2e],
            "marks_sent": self.marks_sent,
            "setup_to_first_audio_s": self.setup_to_first_audio,
            "start_to_first_audio_s": self.start_to_first_audio,
            "cpu_per_call_second": self.cpu_per_call_second,
            "speech_direction": {
                "lost": self.callee.jitter.lost if self.callee.jitter else None,
                "fec_recovered": self.callee.playout.fec_recovered,
                "concealed": self.callee.playout.concealed,
                "accelerated": self.callee.playout.accelerated,
                "expanded": self.callee.playout.expanded,
                "stretched_ms": round(self.callee.playout.stretched_ms, 1),
                "underruns": self.callee.jitter.underruns if self.callee.jitter else None,
                "late": self.callee.jitter.late if self.callee.jitter else None,
                "dropped_to_shrink": self.callee.jitter.dropped if self.callee.jitter else None,
                "inserted_to_grow": self.callee.jitter.inserted if self.callee.jitter else None,
                "dropped_by_filter": self.caller.packets_dropped_by_filter,
                "encoder_loss_perc": self.caller.encoder_loss_perc,
                "target_delay_frames": self.callee.jitter.target_delay_frames
                if self.callee.jitter
                else None,
            },
        }


async def run_our_call(
    *,
    seconds: float,
    loss: Callable[[], LossModel | None] = lambda: None,
) -> CallResult:
    """A call of ``seconds`` with ``loss()`` on each direction's RTP path."""
    loop = asyncio.get_running_loop()
    clock = loop.time
    speech = RecordingSource(WavFileSource(speech_sample(), loop=True), clock)
    marks = MarkSource(clock)
    caller_sink, callee_sink = MemorySink(clock=clock), MemorySink(clock=clock)
    t_setup = clock()
    a = await MediaSession.create(controlling=True, source=speech, sink=caller_sink, loss=loss())
    b = await MediaSession.create(controlling=False, source=marks, sink=callee_sink, loss=loss())
    try:
        await asyncio.gather(a.connect(b.local_description()), b.connect(a.local_description()))
        k1, k2 = os.urandom(44), os.urandom(44)
        a.set_keys(tx=k1, rx=k2)
        b.set_keys(tx=k2, rx=k1)
        cpu0, wall0 = time.process_time(), clock()
        a.start()
        b.start()
        await asyncio.sleep(seconds)
        cpu = (time.process_time() - cpu0) / (clock() - wall0)
        sa, sb = a.stats(), b.stats()
    finally:
        await a.close()
        await b.close()
    first = sb.first_audio_at
    since = speech.read_times[0] if speech.read_times else 0.0
    heard, _ = received_since(callee_sink, since)
    quality = score_speech(b"".join(speech.frames), heard)
    got = np.frombuffer(caller_sink.pcm(), dtype="<i2").astype(np.float64)
    delays = mouth_to_ear(marks.marks, got, caller_sink.arrivals)
    return CallResult(
        quality=quality,
        m2e=delays,
        marks_sent=len(marks.marks),
        setup_to_first_audio=None if first is None else first - t_setup,
        start_to_first_audio=None
        if first is None or sa.started_at is None
        else first - sa.started_at,
        cpu_per_call_second=cpu,
        caller=sa,
        callee=sb,
    )
