"""Sinks for headless calls, tests and benchmarks: a WAV recorder, memory, and nothing.

Every sink checks that it gets whole 20 ms frames: a wrong size is a framing bug upstream and is
reported at once (AudioFormatError) instead of producing a file at the wrong speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from voice.audio.base import FRAME_BYTES, SAMPLE_RATE, Int16Array, check_frame, pcm_to_array
from voice.audio.wavfile import WavWriter


class WavRecorder:
    """Record frames to a 48 kHz mono 16-bit WAV file.

    The header is patched after every frame, so the file is valid even if the process dies
    before ``close()``; ``close()`` is idempotent and writes after it raise.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = WavWriter(self.path, SAMPLE_RATE)

    @property
    def frames_written(self) -> int:
        return self._writer.data_bytes // FRAME_BYTES

    async def write_frame(self, pcm: bytes) -> None:
        check_frame(pcm)
        self._writer.write(pcm)

    async def close(self) -> None:
        self._writer.close()


class MemorySink:
    """Keep every frame with the time it arrived (``clock`` is injected; monotonic by default).

    ``max_frames`` bounds memory for long runs: the oldest frames are dropped and counted.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_frames: int | None = None
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        self._clock = clock
        self.max_frames = max_frames
        self.frames: list[bytes] = []
        self.arrivals: list[float] = []
        self.dropped = 0
        self.closed = False

    async def write_frame(self, pcm: bytes) -> None:
        check_frame(pcm)
        self.frames.append(bytes(pcm))
        self.arrivals.append(self._clock())
        if self.max_frames is not None and len(self.frames) > self.max_frames:
            del self.frames[0], self.arrivals[0]
            self.dropped += 1

    def pcm(self) -> bytes:
        """All kept frames, concatenated."""
        return b"".join(self.frames)

    def samples(self) -> Int16Array:
        """All kept frames as one int16 array."""
        if not self.frames:
            return np.zeros(0, dtype=np.int16)
        return pcm_to_array(self.pcm())

    async def close(self) -> None:
        self.closed = True


class NullSink:
    """Discard frames, counting them (for calls where nobody listens)."""

    def __init__(self) -> None:
        self.frames = 0
        self.closed = False

    async def write_frame(self, pcm: bytes) -> None:
        check_frame(pcm)
        self.frames += 1

    async def close(self) -> None:
        self.closed = True
