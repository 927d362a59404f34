"""The shipped speech sample has the client's format and is real speech; it can be rebuilt."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from voice.audio.quality import compare
from voice.audio.speech import regenerate_speech_sample, speech_sample
from voice.audio.wavfile import load_wav


def test_shipped_sample_format_and_size() -> None:
    path = speech_sample()
    assert path.stat().st_size < 500_000
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48_000, 1, 2)
        assert 3.0 <= w.getnframes() / 48_000 <= 5.0


def test_shipped_sample_is_speech_not_silence() -> None:
    x = load_wav(speech_sample()).astype(np.float64)
    frame_rms = np.sqrt(np.mean(x[: len(x) // 960 * 960].reshape(-1, 960) ** 2, axis=1))
    assert np.max(np.abs(x)) < 32767  # not clipped
    voiced = frame_rms > 300
    assert 0.4 < voiced.mean() < 0.98  # mostly voiced, with pauses between words


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="no espeak")
def test_regenerated_sample_matches_format(tmp_path: Path) -> None:
    out = regenerate_speech_sample(tmp_path / "s.wav", "Hello there, this is a test call.")
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48_000, 1, 2)
    again = regenerate_speech_sample(tmp_path / "t.wav", "Hello there, this is a test call.")
    assert compare(load_wav(out), load_wav(again)).correlation > 0.999  # deterministic
