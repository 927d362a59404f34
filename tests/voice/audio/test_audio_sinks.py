"""Sinks keep what they get, check the framing, and the recorder's file survives a crash."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from voice.audio.base import FRAME_BYTES, AudioSink, AudioSource
from voice.audio.sinks import MemorySink, NullSink, WavRecorder
from voice.audio.sources import ToneSource
from voice.audio.wavfile import load_wav
from voice.errors import AudioFormatError


def frame(value: int) -> bytes:
    return np.full(960, value, dtype="<i2").tobytes()


async def test_everything_satisfies_the_protocols(tmp_path: Path) -> None:
    for sink in (MemorySink(), NullSink(), WavRecorder(tmp_path / "p.wav")):
        assert isinstance(sink, AudioSink)
        await sink.close()
    assert isinstance(ToneSource(), AudioSource)


async def test_recorder_file_is_valid_without_close(tmp_path: Path) -> None:
    recorder = WavRecorder(tmp_path / "crash.wav")
    for i in range(5):
        await recorder.write_frame(frame(i))
    # no close(): as if the process died here; another reader sees a complete, valid file
    with wave.open(str(tmp_path / "crash.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48_000, 1, 2)
        assert w.getnframes() == 5 * 960
    assert np.array_equal(load_wav(tmp_path / "crash.wav")[::960], np.arange(5))
    assert recorder.frames_written == 5
    await recorder.close()
    await recorder.close()  # idempotent


async def test_sinks_reject_partial_frames(tmp_path: Path) -> None:
    for sink in (MemorySink(), NullSink(), WavRecorder(tmp_path / "bad.wav")):
        with pytest.raises(AudioFormatError):
            await sink.write_frame(bytes(FRAME_BYTES - 2))
        await sink.close()


async def test_memory_sink_stamps_arrivals_with_the_injected_clock() -> None:
    now = [10.0]
    sink = MemorySink(clock=lambda: now[0])
    for i in range(3):
        await sink.write_frame(frame(i))
        now[0] += 0.02
    assert sink.arrivals == pytest.approx([10.0, 10.02, 10.04])
    assert sink.frames == [frame(0), frame(1), frame(2)]
    assert np.array_equal(sink.samples()[::960], [0, 1, 2])
    assert sink.pcm() == frame(0) + frame(1) + frame(2)


async def test_memory_sink_bound_drops_oldest() -> None:
    sink = MemorySink(max_frames=2)
    for i in range(5):
        await sink.write_frame(frame(i))
    assert sink.frames == [frame(3), frame(4)] and sink.dropped == 3 and len(sink.arrivals) == 2
    assert len(MemorySink().samples()) == 0


async def test_null_sink_counts() -> None:
    sink = NullSink()
    for _ in range(4):
        await sink.write_frame(frame(1))
    await sink.close()
    assert sink.frames == 4 and sink.closed
