"""The one audio frame format of the client, and the source/sink protocols.

Everything inside the client is 48 kHz, mono, signed 16-bit little-endian PCM in 20 ms frames of
960 samples (1,920 bytes): what Opus encodes natively, so no stage ever resamples or re-frames.
Sources return one frame per ``read_frame()`` (``None`` at end of stream); sinks take one frame per
``write_frame()``. File and generated sources return at once (the media sender paces them on its
own 20 ms clock); a microphone waits for the device.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from voice.errors import AudioFormatError

SAMPLE_RATE = 48_000
CHANNELS = 1
SAMPLE_WIDTH = 2  # bytes per sample (s16le)
FRAME_SAMPLES = 960
FRAME_BYTES = 1_920
FRAME_SECONDS = 0.02

Int16Array = npt.NDArray[np.int16]


@runtime_checkable
class AudioSource(Protocol):
    """Something that produces 20 ms frames of 48 kHz mono s16le PCM."""

    async def read_frame(self) -> bytes | None:
        """Return the next frame of exactly FRAME_BYTES, or None at the end of the stream."""
        ...

    async def close(self) -> None:
        """Release whatever the source holds; idempotent."""
        ...


@runtime_checkable
class AudioSink(Protocol):
    """Something that consumes 20 ms frames of 48 kHz mono s16le PCM."""

    async def write_frame(self, pcm: bytes) -> None:
        """Take one frame of exactly FRAME_BYTES."""
        ...

    async def close(self) -> None:
        """Flush and release; idempotent."""
        ...


def check_frame(pcm: bytes) -> None:
    """Raise AudioFormatError unless ``pcm`` is exactly one frame (catches framing bugs early)."""
    if len(pcm) != FRAME_BYTES:
        raise AudioFormatError(f"an audio frame is {FRAME_BYTES} bytes, got {len(pcm)}")


def pcm_to_array(pcm: bytes) -> Int16Array:
    """View s16le bytes as an int16 array (a copy, so the result is writable)."""
    if len(pcm) % SAMPLE_WIDTH:
        raise AudioFormatError(f"s16le PCM must have an even length, got {len(pcm)} bytes")
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def array_to_pcm(samples: npt.ArrayLike) -> bytes:
    """Encode samples as s16le bytes; floats are rounded and clipped to the int16 range."""
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        arr = np.clip(np.rint(arr.astype(np.float64)), -32768, 32767).astype(np.int16)
    return arr.astype("<i2").tobytes()


def split_frames(samples: Int16Array) -> list[bytes]:
    """Cut mono samples into whole frames, zero-padding the last one."""
    pad = (-len(samples)) % FRAME_SAMPLES
    if pad:
        samples = np.concatenate([samples, np.zeros(pad, dtype=np.int16)])
    pcm = array_to_pcm(samples)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
