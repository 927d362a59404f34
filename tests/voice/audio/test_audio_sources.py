"""Generated and file sources produce exactly what they claim, in exact 1,920-byte frames."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from voice.audio.base import FRAME_BYTES, FRAME_SAMPLES, AudioSource, pcm_to_array
from voice.audio.sinks import WavRecorder
from voice.audio.sources import SilenceSource, ToneSource, WavFileSource
from voice.audio.wavfile import write_wav


def peak_hz(x: np.ndarray, rate: int = 48_000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


async def read_all(source: AudioSource, limit: int = 10_000) -> list[bytes]:
    frames = []
    while (frame := await source.read_frame()) is not None:
        frames.append(frame)
        assert len(frames) < limit, "source did not end"
    return frames


async def test_tone_has_its_frequency_and_level() -> None:
    frames = await read_all(ToneSource(440, 8000, duration_s=1.0))
    assert len(frames) == 50 and all(len(f) == FRAME_BYTES for f in frames)
    x = pcm_to_array(b"".join(frames))
    assert peak_hz(x) == pytest.approx(440, abs=1)
    assert rms(x) == pytest.approx(8000 / np.sqrt(2), rel=0.002)


async def test_tone_is_phase_continuous_across_frames() -> None:
    source = ToneSource(1234.5, 10_000)
    x = pcm_to_array(b"".join([await source.read_frame() or b"" for _ in range(7)]))
    ideal = 10_000 * np.sin(2 * np.pi * 1234.5 * np.arange(7 * FRAME_SAMPLES) / 48_000)
    assert np.max(np.abs(x - ideal)) <= 0.5 + 1e-9  # only rounding: no jumps at frame edges


async def test_tone_duration_pads_the_last_frame_then_ends() -> None:
    frames = await read_all(ToneSource(440, 8000, duration_s=0.05))  # 2.5 frames
    assert len(frames) == 3
    last = pcm_to_array(frames[2])
    assert np.any(last[:480] != 0) and np.all(last[480:] == 0)


def test_tone_rejects_impossible_parameters() -> None:
    for kwargs in ({"freq_hz": 24_000}, {"amplitude": 40_000}, {"duration_s": -1}):
        with pytest.raises(ValueError):
            ToneSource(**kwargs)


async def test_silence_is_zero_and_ends() -> None:
    frames = await read_all(SilenceSource(duration_s=0.1))
    assert len(frames) == 5 and frames == [bytes(FRAME_BYTES)] * 5
    endless = SilenceSource()
    assert [await endless.read_frame() for _ in range(100)] == [bytes(FRAME_BYTES)] * 100
    await endless.close()
    assert await endless.read_frame() is None


async def test_recorder_then_file_source_round_trip(tmp_path: Path) -> None:
    sent = await read_all(ToneSource(700, 12_000, duration_s=0.4))
    recorder = WavRecorder(tmp_path / "r.wav")
    for frame in sent:
        await recorder.write_frame(frame)
    await recorder.close()
    assert await read_all(WavFileSource(tmp_path / "r.wav")) == sent


async def test_file_source_pads_last_frame(tmp_path: Path) -> None:
    write_wav(tmp_path / "short.wav", np.full(1000, 5, dtype=np.int16))
    frames = await read_all(WavFileSource(tmp_path / "short.wav"))
    assert [len(f) for f in frames] == [FRAME_BYTES, FRAME_BYTES]
    last = pcm_to_array(frames[1])
    assert np.all(last[:40] == 5) and np.all(last[40:] == 0)


async def test_file_source_loops_seamlessly(tmp_path: Path) -> None:
    x = np.arange(1500, dtype=np.int16)
    write_wav(tmp_path / "loop.wav", x)
    source = WavFileSource(tmp_path / "loop.wav", loop=True)
    got = pcm_to_array(b"".join([await source.read_frame() or b"" for _ in range(10)]))
    assert np.array_equal(got, np.tile(x, 7)[: 10 * FRAME_SAMPLES])


async def test_empty_file_ends_at_once(tmp_path: Path) -> None:
    write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.int16))
    assert await WavFileSource(tmp_path / "empty.wav", loop=True).read_frame() is None


@pytest.mark.parametrize("rate", [16_000, 44_100])
async def test_stereo_file_at_other_rate_keeps_tone(tmp_path: Path, rate: int) -> None:
    t = np.arange(rate) / rate
    left = 6000 * np.sin(2 * np.pi * 1000 * t)
    stereo = np.stack([left, left], axis=1).round().astype("<i2")
    with wave.open(str(tmp_path / "in.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(stereo.tobytes())
    source = WavFileSource(tmp_path / "in.wav")
    assert source.duration_s == pytest.approx(1.0)
    frames = await read_all(source)
    assert len(frames) == 50 and all(len(f) == FRAME_BYTES for f in frames)
    x = pcm_to_array(b"".join(frames))
    assert peak_hz(x) == pytest.approx(1000, abs=1)
    assert rms(x[4800:-4800]) == pytest.approx(6000 / np.sqrt(2), rel=0.01)
