"""Audio I/O behind one interface: sources produce and sinks consume 20 ms frames of 48 kHz mono
s16le PCM (see :mod:`voice.audio.base`).

Generated and file sources (:mod:`.sources`), recorders and test sinks (:mod:`.sinks`), pyaudio
devices (:mod:`.devices`, :mod:`.devicelist`: not imported here, so headless code never loads
PortAudio), the received-audio quality measure (:mod:`.quality`) and a speech sample
(:mod:`.speech`).
"""

from __future__ import annotations

from voice.audio.base import (
    CHANNELS,
    FRAME_BYTES,
    FRAME_SAMPLES,
    FRAME_SECONDS,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    AudioSink,
    AudioSource,
)

__all__ = [
    "CHANNELS",
    "FRAME_BYTES",
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "SAMPLE_WIDTH",
    "AudioSink",
    "AudioSource",
]
