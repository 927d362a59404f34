"""The band-limited resampler keeps tones, removes what cannot be represented, adds no delay."""

from __future__ import annotations

import numpy as np
import pytest

from voice.audio.resample import resample, to_mono


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


@pytest.mark.parametrize(
    ("rate_in", "rate_out"),
    [(44_100, 48_000), (16_000, 48_000), (8_000, 48_000), (22_050, 48_000), (48_000, 16_000)],
)
def test_tone_keeps_frequency_and_level(rate_in: int, rate_out: int) -> None:
    t = np.arange(rate_in) / rate_in  # 1 s
    out = resample(8000 * np.sin(2 * np.pi * 1000 * t), rate_in, rate_out)
    assert len(out) == rate_out
    ideal = 8000 * np.sin(2 * np.pi * 1000 * np.arange(rate_out) / rate_out)
    inner = slice(rate_out // 10, -rate_out // 10)  # away from the zero-padded edges
    assert peak_hz(out, rate_out) == pytest.approx(1000, abs=1)
    # close to the ideal continuous-time signal sampled at the new rate (< -60 dB error)
    assert rms(out[inner] - ideal[inner]) < 8


def test_downsampling_removes_what_the_new_rate_cannot_hold() -> None:
    t = np.arange(48_000) / 48_000
    out = resample(8000 * np.sin(2 * np.pi * 20_000 * t), 48_000, 16_000)  # above 8 kHz Nyquist
    assert rms(out[1600:-1600]) < 8000 / np.sqrt(2) / 1000  # at least 60 dB down, no alias


def test_no_delay_is_added() -> None:
    click = np.zeros(48_000)
    click[24_000] = 30_000.0
    assert int(np.argmax(resample(click, 48_000, 16_000))) == 8_000
    assert (
        int(np.argmax(resample(np.zeros(16_000) + (np.arange(16_000) == 4_000), 16_000, 48_000)))
        == 12_000
    )


def test_same_rate_and_empty_input_are_copies() -> None:
    x = np.arange(10, dtype=np.float64)
    y = resample(x, 48_000, 48_000)
    assert np.array_equal(x, y) and y is not x
    assert len(resample(np.zeros(0), 16_000, 48_000)) == 0


def test_output_length_rounds_up() -> None:
    assert len(resample(np.ones(147), 44_100, 48_000)) == 160
    assert len(resample(np.ones(148), 44_100, 48_000)) == 162  # ceil(148 * 160 / 147)


def test_to_mono_averages_channels() -> None:
    stereo = np.array([[100, 300], [-200, 0]])
    assert np.array_equal(to_mono(stereo), [200.0, -100.0])
    with pytest.raises(ValueError):
        resample(stereo, 48_000, 16_000)
