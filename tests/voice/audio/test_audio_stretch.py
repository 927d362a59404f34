"""Time-stretching units: the duration changes as asked, pitch is preserved, no clicks."""

from __future__ import annotations

import numpy as np
import pytest

from voice.audio.base import FRAME_SAMPLES, SAMPLE_RATE
from voice.audio.speech import speech_sample
from voice.audio.stretch import (
    MAX_LAG_S,
    MIN_LAG_S,
    QUIET_RMS,
    accelerate,
    expand,
    find_period,
)
from voice.audio.wavfile import load_wav

PITCH_HZ = 150.0  # period 320 samples: the only multiple inside 2.5-10 ms
PERIOD = round(SAMPLE_RATE / PITCH_HZ)
MAX_LAG = round(MAX_LAG_S * SAMPLE_RATE)
MIN_LAG = round(MIN_LAG_S * SAMPLE_RATE)


def voiced(samples: int, *, pitch: float = PITCH_HZ, start: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: a pitch with three harmonics of falling level."""
    t = (np.arange(samples) + start) / SAMPLE_RATE
    wave = sum(a * np.sin(2 * np.pi * pitch * h * t) for h, a in ((1, 6000), (2, 3000), (3, 1500)))
    return np.asarray(np.rint(wave), dtype=np.int16)


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(samples))


def max_step(samples: np.ndarray) -> int:
    """The largest sample-to-sample jump: a click shows up as one far above the signal's."""
    return int(np.max(np.abs(np.diff(samples.astype(np.int64)))))


def test_find_period_finds_the_pitch() -> None:
    period, correlation = find_period(voiced(FRAME_SAMPLES))
    assert period == PERIOD
    assert correlation > 0.99


@pytest.mark.parametrize("stretch, sign", [(accelerate, -1), (expand, +1)])
def test_a_voiced_frame_changes_by_exactly_one_pitch_period(stretch, sign) -> None:  # type: ignore[no-untyped-def]
    frame = voiced(FRAME_SAMPLES)
    done = stretch(frame)
    assert done.period == PERIOD
    assert len(done.samples) == FRAME_SAMPLES + sign * PERIOD


@pytest.mark.parametrize("stretch", [accelerate, expand])
def test_the_frame_keeps_its_first_and_last_samples(stretch) -> None:  # type: ignore[no-untyped-def]
    frame = voiced(FRAME_SAMPLES, start=123)
    out = stretch(frame).samples
    assert out[0] == frame[0]
    np.testing.assert_array_equal(out[-FRAME_SAMPLES // 3 :], frame[-FRAME_SAMPLES // 3 :])


@pytest.mark.parametrize("stretch", [accelerate, expand])
def test_pitch_is_preserved_across_a_stream_of_stretched_frames(stretch) -> None:  # type: ignore[no-untyped-def]
    frames = [voiced(FRAME_SAMPLES, start=k * FRAME_SAMPLES) for k in range(50)]
    stream = np.concatenate([stretch(f).samples for f in frames])
    original = np.concatenate(frames)
    assert len(stream) != len(original)  # the duration did change...
    assert dominant_hz(stream) == pytest.approx(PITCH_HZ, rel=0.02)  # ...the pitch did not
    assert dominant_hz(original) == pytest.approx(PITCH_HZ, rel=0.02)


@pytest.mark.parametrize("stretch", [accelerate, expand])
def test_no_click_where_stretched_frames_join_their_neighbours(stretch) -> None:  # type: ignore[no-untyped-def]
    frames = [voiced(FRAME_SAMPLES, start=k * FRAME_SAMPLES) for k in range(20)]
    # Every other frame stretched: each joins an unstretched neighbour on both sides.
    stream = np.concatenate([stretch(f).samples if k % 2 else f for k, f in enumerate(frames)])
    assert max_step(stream) <= 1.1 * max_step(np.concatenate(frames))


@pytest.mark.parametrize("stretch", [accelerate, expand])
def test_no_click_in_stretched_speech(stretch) -> None:  # type: ignore[no-untyped-def]
    """No stretched frame of the speech sample jumps further between two samples than the
    frame it came from (a hard splice, even one period apart, jumps 4-5 times further)."""
    speech = load_wav(speech_sample())
    frames = [
        speech[k : k + FRAME_SAMPLES] for k in range(0, len(speech) - FRAME_SAMPLES, FRAME_SAMPLES)
    ]
    stretched = [(frame, stretch(frame)) for frame in frames]
    done = [(frame, s.samples) for frame, s in stretched if s.period]
    assert len(done) > len(frames) // 4  # it did stretch speech, voiced and quiet
    for frame, out in done:
        assert max_step(out) <= 1.05 * max_step(frame) + 1


@pytest.mark.parametrize("stretch", [accelerate, expand])
def test_loud_noise_is_not_periodic_and_is_left_alone(stretch) -> None:  # type: ignore[no-untyped-def]
    noise = np.random.default_rng(7).normal(0, 6000, FRAME_SAMPLES).astype(np.int16)
    done = stretch(noise)
    assert done.period == 0
    np.testing.assert_array_equal(done.samples, noise)


@pytest.mark.parametrize("stretch, sign", [(accelerate, -1), (expand, +1)])
def test_a_quiet_frame_is_stretched_by_the_longest_period(stretch, sign) -> None:  # type: ignore[no-untyped-def]
    hiss = np.random.default_rng(8).normal(0, QUIET_RMS / 4, FRAME_SAMPLES).astype(np.int16)
    done = stretch(hiss)
    assert done.period == MAX_LAG
    assert len(done.samples) == FRAME_SAMPLES + sign * MAX_LAG


def test_accelerate_never_removes_more_than_it_may() -> None:
    frame = voiced(FRAME_SAMPLES, pitch=110.0)  # period 436 samples
    assert accelerate(frame).period == 436
    limited = accelerate(frame, longest=300)
    assert limited.period <= 300
    assert len(limited.samples) == FRAME_SAMPLES - limited.period
    assert accelerate(frame, longest=MIN_LAG - 1).period == 0  # no room at all: unchanged
