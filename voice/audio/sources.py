"""Generated and file sources for headless calls, tests and benchmarks.

They return frames at once: the media sender paces reads on its own 20 ms clock. Each stream
ends with a zero-padded last frame and then ``None`` (unless it loops or is endless).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from voice.audio.base import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, array_to_pcm
from voice.audio.wavfile import load_wav

_SILENT_FRAME = bytes(FRAME_BYTES)


def _total_samples(duration_s: float | None) -> int | None:
    if duration_s is None:
        return None
    if duration_s < 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s}")
    return round(duration_s * SAMPLE_RATE)


class ToneSource:
    """A sine wave, phase-continuous across frames; endless unless ``duration_s`` is given."""

    def __init__(
        self, freq_hz: float = 440.0, amplitude: float = 8000.0, duration_s: float | None = None
    ) -> None:
        if not 0 < freq_hz < SAMPLE_RATE / 2:
            raise ValueError(f"freq_hz must be in (0, {SAMPLE_RATE // 2}), got {freq_hz}")
        if not 0 <= amplitude <= 32767:
            raise ValueError(f"amplitude must be in [0, 32767], got {amplitude}")
        self.freq_hz = freq_hz
        self.amplitude = amplitude
        self._remaining = _total_samples(duration_s)
        self._n = 0  # samples produced so far (phase reference)
        self._closed = False

    async def read_frame(self) -> bytes | None:
        if self._closed or self._remaining == 0:
            return None
        count = FRAME_SAMPLES if self._remaining is None else min(FRAME_SAMPLES, self._remaining)
        t = (self._n + np.arange(FRAME_SAMPLES, dtype=np.float64)) / SAMPLE_RATE
        wave = self.amplitude * np.sin(2 * np.pi * self.freq_hz * t)
        wave[count:] = 0.0
        self._n += count
        if self._remaining is not None:
            self._remaining -= count
        return array_to_pcm(wave)

    async def close(self) -> None:
        self._closed = True


class SilenceSource:
    """Digital silence; endless unless ``duration_s`` is given."""

    def __init__(self, duration_s: float | None = None) -> None:
        self._remaining = _total_samples(duration_s)
        self._closed = False

    async def read_frame(self) -> bytes | None:
        if self._closed or self._remaining == 0:
            return None
        if self._remaining is not None:
            self._remaining -= min(FRAME_SAMPLES, self._remaining)
        return _SILENT_FRAME

    async def close(self) -> None:
        self._closed = True


class WavFileSource:
    """Frames from a PCM WAV file, converted to 48 kHz mono once at open.

    Any integer-PCM WAV is accepted (see :func:`voice.audio.wavfile.read_wav`): channels are
    averaged and the rate converted with a band-limited resampler. With ``loop`` the file repeats
    seamlessly (no padding between repeats) and never ends.
    """

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        self.path = Path(path)
        self.loop = loop
        self._samples = load_wav(self.path, SAMPLE_RATE)
        self._pos = 0
        self._closed = False

    @property
    def duration_s(self) -> float:
        return len(self._samples) / SAMPLE_RATE

    async def read_frame(self) -> bytes | None:
        total = len(self._samples)
        if self._closed or total == 0:
            return None
        if self.loop:
            idx = (self._pos + np.arange(FRAME_SAMPLES)) % total
            self._pos = (self._pos + FRAME_SAMPLES) % total
            return array_to_pcm(self._samples[idx])
        if self._pos >= total:
            return None
        chunk = self._samples[self._pos : self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), dtype=np.int16)])
        return array_to_pcm(chunk)

    async def close(self) -> None:
        self._closed = True
