"""Input and output levels for the call screen, and the audio of call after call.

:class:`MeteredSource` and :class:`MeteredSink` pass every frame through unchanged and keep the
level of the last one (dBFS) in a shared :class:`Levels`: what the microphone hears (before
mute: the screen says when the peer gets silence) and what the speaker plays. Only a level is
kept, never a sample.

:class:`CallAudio` is the phone's audio factory for a UI that takes more than one call: the
media session of each call closes its pair, so the next pair is built (``refill``) once a call
took the last one, before the next call needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voice.audio.base import AudioSink, AudioSource, pcm_to_array
from voice.audio.sinks import NullSink
from voice.audio.sources import SilenceSource

__all__ = ["CallAudio", "Levels", "MeteredSink", "MeteredSource", "dbfs"]


def dbfs(pcm: bytes) -> float:
    """The RMS level of s16le ``pcm`` relative to full scale; -inf for digital silence."""
    samples = pcm_to_array(pcm).astype(np.float64)
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


@dataclass
class Levels:
    """The last frame's level each way (None until a frame passed)."""

    input_dbfs: float | None = None
    output_dbfs: float | None = None

    def reset(self) -> None:
        self.input_dbfs = self.output_dbfs = None


class MeteredSource:
    """An AudioSource that notes the level of each frame it hands on."""

    def __init__(self, inner: AudioSource, levels: Levels) -> None:
        self.inner = inner
        self._levels = levels

    async def read_frame(self) -> bytes | None:
        frame = await self.inner.read_frame()
        if frame is not None:
            self._levels.input_dbfs = dbfs(frame)
        return frame

    async def close(self) -> None:
        await self.inner.close()


class MeteredSink:
    """An AudioSink that notes the level of each frame before playing it."""

    def __init__(self, inner: AudioSink, levels: Levels) -> None:
        self.inner = inner
        self._levels = levels

    async def write_frame(self, pcm: bytes) -> None:
        self._levels.output_dbfs = dbfs(pcm)
        await self.inner.write_frame(pcm)

    async def close(self) -> None:
        await self.inner.close()


class PairBuilder(Protocol):
    """What builds a call's audio (voice.cli.audio.AudioChoice)."""

    async def build(self) -> tuple[AudioSource, AudioSink]: ...


class CallAudio:
    """Hands each call a metered source/sink pair, built ahead so a missing device fails
    before anyone answers. A call that comes before :meth:`refill` finished gets silence
    (metered too) rather than none."""

    def __init__(self, choice: PairBuilder, levels: Levels | None = None) -> None:
        self.choice = choice
        self.levels = levels or Levels()
        self._prepared: tuple[AudioSource, AudioSink] | None = None
        self.current: tuple[AudioSource, AudioSink] | None = None  # the newest call's pair

    async def refill(self) -> None:
        """Build the next call's pair unless one is waiting (NoAudioDevice, OSError, ...)."""
        if self._prepared is None:
            self._prepared = await self.choice.build()

    def __call__(self, _call: object) -> tuple[AudioSource, AudioSink]:
        pair: tuple[AudioSource, AudioSink]
        if self._prepared is not None:
            pair, self._prepared = self._prepared, None
        else:
            pair = (SilenceSource(), NullSink())
        self.levels.reset()
        self.current = MeteredSource(pair[0], self.levels), MeteredSink(pair[1], self.levels)
        return self.current

    async def close(self) -> None:
        """Close the pair no call took."""
        if self._prepared is not None:
            source, sink = self._prepared
            self._prepared = None
            await source.close()
            await sink.close()
