"""Mouth-to-ear by content: short tone bursts ("marks") in a silent source, found again in a sink.

The same measure serves our client and plain aiortc. A mark's *send time* is the time its frame
was handed to the sender (the source's ``read_frame`` / the track's ``recv`` returned it) plus
the mark's offset inside that frame; its *receive time* is the time the frame holding it was
written to the sink (or returned by the receiving track's ``recv``) plus its offset inside that
frame. So the figure is hand-off to hand-off, with the codec's own delay (the shift of the mark
inside the frames) included; a real device adds its capture and output buffers on top, equally
for both clients.

Marks cycle through a few frequencies so a mark can only be mistaken for one sent seconds
earlier, far beyond any delay we measure. Pure functions and a source; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voice.audio.base import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, array_to_pcm

FloatArray = npt.NDArray[np.float64]

MARK_FREQS = (700.0, 1000.0, 1300.0, 1600.0, 1900.0)
MARK_SAMPLES = 576  # 12 ms burst
MARK_OFFSET = 96  # starts 2 ms into its frame
MARK_AMPLITUDE = 12_000.0
SPACING_FRAMES = 15  # one mark every 300 ms


def mark_template(freq: float) -> FloatArray:
    """One burst: a tone with 2 ms raised-cosine edges."""
    n = np.arange(MARK_SAMPLES, dtype=np.float64)
    ramp = 96
    env = np.ones(MARK_SAMPLES)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    env[:ramp] = edge
    env[-ramp:] = edge[::-1]
    return np.asarray(MARK_AMPLITUDE * env * np.sin(2 * np.pi * freq * n / SAMPLE_RATE))


@dataclass(frozen=True)
class SentMark:
    index: int  # sample index in the sent stream
    freq: int  # index into MARK_FREQS
    time: float  # hand-off time of the mark's first sample


class MarkSource:
    """Silence with a mark every ``spacing`` frames; records when each frame was read."""

    def __init__(self, clock: Callable[[], float], *, spacing: int = SPACING_FRAMES) -> None:
        self._clock = clock
        self._spacing = spacing
        self._frame = 0
        self.read_times: list[float] = []
        self.marks: list[SentMark] = []
        self._templates = [mark_template(f) for f in MARK_FREQS]

    async def read_frame(self) -> bytes | None:
        now = self._clock()
        self.read_times.append(now)
        n = self._frame
        self._frame += 1
        if n % self._spacing != self._spacing // 2:
            return bytes(FRAME_BYTES)
        k = (n // self._spacing) % len(MARK_FREQS)
        frame = np.zeros(FRAME_SAMPLES)
        frame[MARK_OFFSET : MARK_OFFSET + MARK_SAMPLES] = self._templates[k]
        self.marks.append(
            SentMark(n * FRAME_SAMPLES + MARK_OFFSET, k, now + MARK_OFFSET / SAMPLE_RATE)
        )
        return array_to_pcm(frame)

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class FoundMark:
    index: int  # sample index in the received stream
    freq: int


def find_marks(received: FloatArray, *, threshold: float = 2_000.0) -> list[FoundMark]:
    """Marks in a received mono 48 kHz stream, sample-accurate by matched filtering.

    Bursts are found as runs of 1 ms blocks above ``threshold`` RMS; each burst's frequency is
    the mark template that correlates best, and its position the lag of that correlation peak.
    """
    block = 48
    nblocks = len(received) // block
    if nblocks == 0:
        return []
    blocks = received[: nblocks * block].reshape(nblocks, block)
    loud = np.sqrt(np.mean(blocks * blocks, axis=1)) > threshold
    found: list[FoundMark] = []
    templates = [mark_template(f) for f in MARK_FREQS]
    i = 0
    while i < nblocks:
        if not loud[i]:
            i += 1
            continue
        j = i
        while j < nblocks and (loud[j] or (j + 1 < nblocks and loud[j + 1])):
            j += 1
        lo = max(0, i * block - MARK_SAMPLES)
        hi = min(len(received), j * block + MARK_SAMPLES)
        seg = received[lo:hi]
        best = (-1.0, 0, 0)
        for k, tpl in enumerate(templates):
            if len(seg) < len(tpl):
                continue
            corr = np.correlate(seg, tpl, mode="valid")
            at = int(np.argmax(corr))
            if corr[at] > best[0]:
                best = (float(corr[at]), k, at)
        if best[0] > 0:
            found.append(FoundMark(lo + best[2], best[1]))
        i = j + 1
    return found


def frame_time(index: int, frame_times: list[float]) -> float | None:
    """Time of sample ``index`` of a stream whose frame ``j`` was handed over at frame_times[j]."""
    j = index // FRAME_SAMPLES
    if j >= len(frame_times):
        return None
    return frame_times[j] + (index % FRAME_SAMPLES) / SAMPLE_RATE


def mouth_to_ear(
    sent: list[SentMark],
    received: FloatArray,
    receive_times: list[float],
    *,
    horizon: float = 1.4,
) -> list[float]:
    """Seconds from each sent mark to its copy in ``received`` (frames written at receive_times).

    A found mark is matched to the latest sent mark of the same frequency at most ``horizon``
    seconds earlier (marks of one frequency repeat every 1.5 s); unmatched ones are ignored.
    """
    delays: list[float] = []
    used: set[int] = set()
    for mark in find_marks(received):
        t_out = frame_time(mark.index, receive_times)
        if t_out is None:
            continue
        candidates = [
            (i, m)
            for i, m in enumerate(sent)
            if m.freq == mark.freq and 0.0 <= t_out - m.time <= horizon and i not in used
        ]
        if not candidates:
            continue
        i, m = max(candidates, key=lambda c: c[1].time)
        used.add(i)
        delays.append(t_out - m.time)
    return delays


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None
