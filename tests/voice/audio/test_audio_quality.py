"""quality.compare: aligns by cross-correlation and scores like a listener would."""

from __future__ import annotations

import numpy as np
import pytest

from voice.audio.base import array_to_pcm
from voice.audio.quality import compare, find_delay, segmental_correlation
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_wav(speech_sample())


def test_identical_speech_scores_top(speech: np.ndarray) -> None:
    report = compare(speech, speech)
    assert report.delay_ms == 0.0
    assert report.correlation == pytest.approx(1.0, abs=1e-9)
    assert report.pesq_wb is not None and report.pesq_wb > 4.0
    assert report.snr_db == 100.0 and report.gain_db == pytest.approx(0.0)
    assert report.note == ""


@pytest.mark.parametrize("delay_samples", [1, 1234, 9600, 47_000])
def test_delayed_copy_is_aligned_and_delay_measured(speech: np.ndarray, delay_samples: int) -> None:
    received = np.concatenate([np.zeros(delay_samples, dtype=np.int16), speech[:-2000]])
    report = compare(array_to_pcm(speech), array_to_pcm(received))  # bytes work too
    assert report.delay_ms == pytest.approx(delay_samples / 48, abs=1.0)
    assert report.correlation > 0.999
    assert report.pesq_wb is not None and report.pesq_wb > 4.0


def test_received_starting_late_gives_negative_delay(speech: np.ndarray) -> None:
    report = compare(speech, speech[4800:])
    assert report.delay_ms == pytest.approx(-100.0, abs=1.0)
    assert report.correlation > 0.999


def test_quieter_noisy_copy_reports_gain_and_snr(speech: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    quiet = speech * 0.5
    noisy = quiet + rng.normal(0, np.sqrt(np.mean(quiet**2)) / 10, len(speech))  # 20 dB SNR
    report = compare(speech, noisy)
    assert report.gain_db == pytest.approx(-6.02, abs=0.1)
    assert report.snr_db == pytest.approx(20.0, abs=0.5)
    assert report.pesq_wb is not None and 1.0 < report.pesq_wb < 4.0


def test_noise_instead_of_speech_scores_low(speech: np.ndarray) -> None:
    noise = np.random.default_rng(3).normal(0, 3000, len(speech))
    report = compare(speech, noise)
    assert report.correlation < 0.1
    assert report.pesq_wb is not None and report.pesq_wb < 1.5


@pytest.mark.parametrize(
    ("sent", "received", "note"),
    [
        (b"", "speech", "empty input"),
        ("speech", np.zeros(0), "empty input"),
        (np.zeros(48_000), "speech", "sent audio is silent"),
        ("speech", np.zeros(48_000, dtype=np.int16), "received audio is silent"),
    ],
)
def test_empty_or_silent_input_gives_a_clear_report(
    speech: np.ndarray, sent: object, received: object, note: str
) -> None:
    def pick(x: object) -> object:
        return speech if isinstance(x, str) else x

    report = compare(pick(sent), pick(received))  # type: ignore[arg-type]
    assert report.note == note
    assert report.delay_ms is None and report.pesq_wb is None and report.correlation == 0.0


def test_too_short_for_pesq_still_measures_delay(speech: np.ndarray) -> None:
    part = speech[48_000:53_000]  # about 0.1 s of speech
    report = compare(part, np.concatenate([np.zeros(480), part]))
    assert report.delay_ms == pytest.approx(10.0, abs=1.0)
    assert report.pesq_wb is None and "PESQ" in report.note


def test_lag_search_is_bounded() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1000, 20_000)
    shifted = np.concatenate([np.zeros(3000), x])
    assert find_delay(x, shifted, max_lag=5000) == 3000
    assert find_delay(x, shifted, max_lag=1000) != 3000  # outside the window: not found


def test_report_is_json_friendly(speech: np.ndarray) -> None:
    import json

    assert json.loads(json.dumps(compare(speech, speech).as_dict()))["snr_db"] == 100.0


def test_one_20_ms_step_halves_the_overall_correlation_but_not_the_segmental_one(
    speech: np.ndarray,
) -> None:
    """A jitter buffer that conceals one frame mid-clip moves the rest by 20 ms: every word was
    heard, which the window-by-window score says and one correlation at one lag does not."""
    delay = 2400
    middle = delay + speech.size // 2
    heard = np.concatenate([np.zeros(delay, np.int16), speech])
    stepped = np.concatenate([heard[:middle], np.zeros(960, np.int16), heard[middle:]])
    whole = compare(speech, stepped, max_lag_s=1.0)
    assert whole.correlation < 0.7
    assert whole.delay_ms is not None
    lag = round(whole.delay_ms * 48)
    assert segmental_correlation(speech, stepped, lag) > 0.95
    assert segmental_correlation(speech, heard, delay) > 0.99


def test_segmental_correlation_of_other_audio_is_near_zero(speech: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(speech.size) * 3000).astype(np.int16)
    assert segmental_correlation(speech, noise, 0) < 0.1
    other_words = np.roll(speech, 2 * 48_000)  # the same voice, saying something else
    assert segmental_correlation(speech, other_words, 0) < 0.3
    assert segmental_correlation(speech, np.zeros_like(speech), 0) == 0.0
    assert segmental_correlation(speech, speech[:100], 0) == 0.0  # too short to compare
