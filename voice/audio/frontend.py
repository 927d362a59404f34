"""Echo cancellation, noise suppression and gain control for the microphone (WebRTC's APM).

A laptop's microphone hears its own speaker: without an echo canceller the far end hears itself
a few hundred milliseconds late. WebRTC's audio processing module (AEC3, noise suppression,
automatic gain control and a high-pass filter, as in every browser) does all of it in one pass;
we use it through LiveKit's binding, ``livekit.rtc.AudioProcessingModule`` (docs/audio-frontend.md
says why this library and what it measured).

The canceller needs both directions: every frame handed to the speaker (the far-end reference,
:meth:`AudioFrontEnd.far_end`) and every microphone frame (:meth:`AudioFrontEnd.near_end`),
which comes back cleaned. APM works on 10 ms, our frames are 20 ms: each is split in two. The
delay between the two streams (speaker queue, device buffers, air) is found by AEC3's own delay
estimator, so no latency needs to be measured. :func:`with_front_end` wraps a call's microphone
source and speaker sink so that both directions reach one front end.

On for devices, off for WAV files and tones: a file has no room and no speaker in it, and
processing would only alter a test signal. livekit is imported on first use, so headless code
never loads its library. Nothing here logs audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from voice.audio.base import (
    FRAME_BYTES,
    SAMPLE_RATE,
    AudioSink,
    AudioSource,
    check_frame,
)
from voice.errors import AudioError

if TYPE_CHECKING:
    from livekit import rtc

APM_SAMPLES = SAMPLE_RATE // 100  # APM takes 10 ms blocks: 480 samples
_HALF = FRAME_BYTES // 2


@dataclass(frozen=True)
class FrontEndConfig:
    """Which stages run; all on by default (what a person on a laptop needs)."""

    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain_control: bool = True
    high_pass_filter: bool = True


class AudioFrontEnd:
    """One WebRTC APM for one call: feed it what the speaker plays and what the microphone hears.

    Not thread-safe: call both methods from one thread (the event loop, where the wrappers of
    :func:`with_front_end` run). ``stream_delay_ms`` is only a hint; AEC3 estimates the delay.
    """

    def __init__(self, config: FrontEndConfig | None = None, *, stream_delay_ms: int = 0) -> None:
        self.config = config or FrontEndConfig()
        if not 0 <= stream_delay_ms <= 500:
            raise ValueError(f"stream_delay_ms must be in [0, 500], got {stream_delay_ms}")
        self.stream_delay_ms = stream_delay_ms
        try:
            from livekit import rtc  # 28 MB native library: load it only for a call that needs it

            # The native library loads here, lazily: a failure may come from this line too.
            apm = rtc.AudioProcessingModule(
                echo_cancellation=self.config.echo_cancellation,
                noise_suppression=self.config.noise_suppression,
                high_pass_filter=self.config.high_pass_filter,
                auto_gain_control=self.config.auto_gain_control,
            )
        except Exception as exc:
            raise AudioError(
                "the echo canceller (livekit's WebRTC audio processing) could not be loaded: "
                f"{exc}; reinstall with scripts/setup.sh, or pass --no-audio-processing"
            ) from exc
        self._rtc = rtc
        self._apm: rtc.AudioProcessingModule | None = apm
        self.far_frames = 0  # reference frames taken
        self.near_frames = 0  # microphone frames processed

    def _block(self, pcm: bytes) -> rtc.AudioFrame:
        return self._rtc.AudioFrame(bytearray(pcm), SAMPLE_RATE, 1, APM_SAMPLES)

    def far_end(self, pcm: bytes) -> None:
        """Take one frame the speaker is about to play (ignored once closed: the speaker may
        still play out after the microphone stopped)."""
        check_frame(pcm)
        if self._apm is None:
            return
        try:
            for start in (0, _HALF):
                self._apm.process_reverse_stream(self._block(pcm[start : start + _HALF]))
        except RuntimeError as exc:
            raise AudioError(f"the echo canceller refused a speaker frame: {exc}") from exc
        self.far_frames += 1

    def near_end(self, pcm: bytes) -> bytes:
        """Clean one microphone frame: echo removed, noise suppressed, level evened out."""
        check_frame(pcm)
        if self._apm is None:
            raise AudioError("near_end() on a closed audio front end")
        out = bytearray()
        try:
            for start in (0, _HALF):
                block = self._block(pcm[start : start + _HALF])
                if self.config.echo_cancellation:  # APM wants the hint before every block
                    self._apm.set_stream_delay_ms(self.stream_delay_ms)
                self._apm.process_stream(block)  # in place
                out += block.data.cast("B")
        except RuntimeError as exc:
            raise AudioError(f"the echo canceller refused a microphone frame: {exc}") from exc
        self.near_frames += 1
        return bytes(out)

    @property
    def closed(self) -> bool:
        return self._apm is None

    def close(self) -> None:
        """Release the APM (its native handle goes with the last reference); idempotent."""
        self._apm = None


class FrontEndSource:
    """An AudioSource: the wrapped microphone's frames, cleaned by ``front_end``.

    Closing it closes the microphone and the front end.
    """

    def __init__(self, source: AudioSource, front_end: AudioFrontEnd) -> None:
        self.inner = source
        self.front_end = front_end

    async def read_frame(self) -> bytes | None:
        frame = await self.inner.read_frame()
        if frame is None or self.front_end.closed:
            return None
        return self.front_end.near_end(frame)

    async def close(self) -> None:
        self.front_end.close()
        await self.inner.close()


class ReferenceSink:
    """An AudioSink: plays on the wrapped speaker and hands each frame to ``front_end`` as the
    far-end reference, so the canceller knows what the microphone is about to hear again."""

    def __init__(self, sink: AudioSink, front_end: AudioFrontEnd) -> None:
        self.inner = sink
        self.front_end = front_end

    async def write_frame(self, pcm: bytes) -> None:
        self.front_end.far_end(pcm)
        await self.inner.write_frame(pcm)

    async def close(self) -> None:
        await self.inner.close()


def with_front_end(
    source: AudioSource, sink: AudioSink, config: FrontEndConfig | None = None
) -> tuple[FrontEndSource, ReferenceSink]:
    """Wrap a call's microphone and speaker around one new :class:`AudioFrontEnd`."""
    front_end = AudioFrontEnd(config)
    return FrontEndSource(source, front_end), ReferenceSink(sink, front_end)
