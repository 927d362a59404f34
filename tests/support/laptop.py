"""A simulated laptop for the audio front end: a speaker, a microphone and the air between.

The far end's speech goes to the speaker; the microphone hears a delayed, attenuated copy of it
with a short reverberant tail (the echo), the near-end talker, and a little self-noise. Both the
tests (tests/voice/audio/test_frontend.py) and the benchmark (bench/audio_frontend.py) play the
same scenes through it, so their figures mean the same thing.

Two talkers from the one shipped speech sample: the far end is the sample as it is; the near
end is the sample resampled 48 -> 40 kHz and played at 48 kHz, so 20 % higher in pitch and 17 %
faster (another voice to the canceller: a time-warped copy does not correlate with the original).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voice.audio.base import FRAME_SAMPLES, SAMPLE_RATE, array_to_pcm, pcm_to_array
from voice.audio.frontend import AudioFrontEnd
from voice.audio.resample import FloatArray, resample
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav


@dataclass(frozen=True)
class Room:
    """The acoustic path from the laptop's speaker to its microphone."""

    delay_ms: float = 60.0  # speaker to microphone, including the devices' buffers
    echo_gain: float = 0.3  # direct path: -10.5 dB
    reverb_s: float = 0.2  # RT60 of the tail
    reverb_gain: float = 0.03  # tail's starting level relative to the direct path
    noise_rms: float = 10.0  # microphone self-noise, about -70 dBFS
    seed: int = 1

    def impulse_response(self) -> FloatArray:
        rng = np.random.default_rng(self.seed)
        delay = round(self.delay_ms * SAMPLE_RATE / 1000)
        tail = round(1.25 * self.reverb_s * SAMPLE_RATE)
        t = np.arange(1, tail) / SAMPLE_RATE
        h = np.zeros(delay + tail)
        h[delay] = 1.0
        h[delay + 1 :] = (
            self.reverb_gain * rng.standard_normal(tail - 1) * 10 ** (-3 * t / self.reverb_s)
        )
        return self.echo_gain * h


@dataclass(frozen=True)
class Take:
    """One scene as the laptop sees it: equal-length float arrays, whole 20 ms frames."""

    far: FloatArray  # what the speaker plays
    near: FloatArray  # the near-end talker, as the microphone hears them
    echo: FloatArray  # the far end, as the microphone hears it
    mic: FloatArray  # what the microphone records: echo + near + self-noise


def talkers() -> tuple[FloatArray, FloatArray]:
    """The far-end and near-end voices (see the module docstring)."""
    far = load_wav(speech_sample()).astype(np.float64)
    return far, resample(far, SAMPLE_RATE, 40_000)


def place(voice: FloatArray, start_s: float, total: int, gain: float = 1.0) -> FloatArray:
    """``voice`` looped from ``start_s`` to the end of a ``total``-sample scene."""
    out = np.zeros(total)
    start = round(start_s * SAMPLE_RATE)
    if start < total:
        reps = -(-(total - start) // len(voice))
        out[start:] = gain * np.tile(voice, reps)[: total - start]
    return out


def _fftconvolve(x: FloatArray, h: FloatArray) -> FloatArray:
    size = 1 << (len(x) + len(h) - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def record(room: Room, far: FloatArray, near: FloatArray) -> Take:
    """What the microphone hears while the speaker plays ``far`` and someone says ``near``."""
    total = len(far) - len(far) % FRAME_SAMPLES
    far, near = far[:total], near[:total]
    echo = _fftconvolve(far, room.impulse_response())
    noise = room.noise_rms * np.random.default_rng(room.seed + 1).standard_normal(total)
    mic = np.clip(echo + near + noise, -32768, 32767)
    return Take(far=far, near=near, echo=echo, mic=mic)


def process(front_end: AudioFrontEnd | None, take: Take) -> FloatArray:
    """Run the take frame by frame, as a call would: the speaker's frame goes to the front end,
    then the microphone's frame of the same 20 ms comes back cleaned (unchanged without one)."""
    far_frames, mic_frames = array_to_pcm(take.far), array_to_pcm(take.mic)
    out = bytearray()
    step = 2 * FRAME_SAMPLES
    for i in range(0, len(mic_frames), step):
        if front_end is None:
            out += mic_frames[i : i + step]
            continue
        front_end.far_end(far_frames[i : i + step])
        out += front_end.near_end(mic_frames[i : i + step])
    return pcm_to_array(bytes(out)).astype(np.float64)


def _frame_power(x: FloatArray) -> FloatArray:
    n = len(x) - len(x) % FRAME_SAMPLES
    return np.asarray(np.mean(x[:n].reshape(-1, FRAME_SAMPLES) ** 2, axis=1), dtype=np.float64)


def erle_db(
    take: Take, out: FloatArray, *, from_s: float = 1.0, until_s: float | None = None
) -> float:
    """Echo return loss enhancement: microphone power over output power, in dB, on the frames
    between ``from_s`` and ``until_s`` where the echo is within 40 dB of its loudest frame.

    The first second is left out by default: AEC3 needs a moment to find the delay and
    converge, and ERLE is a steady-state figure (bench/audio_frontend.py also reports it whole).
    """
    lo = round(from_s * SAMPLE_RATE / FRAME_SAMPLES)
    hi = None if until_s is None else round(until_s * SAMPLE_RATE / FRAME_SAMPLES)
    echo, mic, res = (_frame_power(x)[lo:hi] for x in (take.echo, take.mic, out))
    active = echo > 1e-4 * echo.max()
    return float(10 * np.log10(mic[active].sum() / max(float(res[active].sum()), 1e-9)))
