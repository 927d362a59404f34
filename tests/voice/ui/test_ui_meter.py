"""Levels are measured on the frames as they pass, unchanged; each call gets a fresh pair."""

from __future__ import annotations

import math

import numpy as np

from voice.audio.base import FRAME_BYTES, FRAME_SAMPLES, AudioSink, AudioSource, array_to_pcm
from voice.audio.sinks import NullSink
from voice.audio.sources import SilenceSource, ToneSource
from voice.ui.meter import CallAudio, Levels, MeteredSink, MeteredSource, dbfs


def test_dbfs_of_full_scale_half_scale_and_silence() -> None:
    full = array_to_pcm(np.full(FRAME_SAMPLES, 32767))
    assert abs(dbfs(full)) < 0.01
    half = array_to_pcm(np.full(FRAME_SAMPLES, 16384))
    assert abs(dbfs(half) - 20 * math.log10(0.5)) < 0.01
    assert dbfs(bytes(FRAME_BYTES)) == -math.inf


async def test_the_wrappers_pass_frames_unchanged_and_note_their_level() -> None:
    levels = Levels()
    source = MeteredSource(ToneSource(440.0), levels)
    frame = await source.read_frame()
    assert frame is not None and len(frame) == FRAME_BYTES
    assert levels.input_dbfs is not None and -20.0 < levels.input_dbfs < 0.0
    written: list[bytes] = []

    class Recording(NullSink):
        async def write_frame(self, pcm: bytes) -> None:
            written.append(pcm)

    sink = MeteredSink(Recording(), levels)
    await sink.write_frame(frame)
    assert written == [frame]
    assert levels.output_dbfs == levels.input_dbfs


class Builder:
    def __init__(self) -> None:
        self.built: list[tuple[AudioSource, AudioSink]] = []

    async def build(self) -> tuple[AudioSource, AudioSink]:
        pair: tuple[AudioSource, AudioSink] = (ToneSource(300.0), NullSink())
        self.built.append(pair)
        return pair


async def test_each_call_gets_the_prepared_pair_and_the_next_one_after_refill() -> None:
    builder = Builder()
    audio = CallAudio(builder)
    await audio.refill()
    await audio.refill()  # one waiting already: nothing more is opened
    assert len(builder.built) == 1
    first_source, first_sink = audio(None)
    assert isinstance(first_source, MeteredSource) and first_source.inner is builder.built[0][0]
    assert isinstance(first_sink, MeteredSink) and first_sink.inner is builder.built[0][1]
    early_source, _ = audio(None)  # a call before the refill: silence, still metered
    assert isinstance(early_source, MeteredSource)
    assert isinstance(early_source.inner, SilenceSource)
    await audio.refill()
    second_source, _ = audio(None)
    assert isinstance(second_source, MeteredSource)
    assert second_source.inner is builder.built[1][0]
    await audio.close()
