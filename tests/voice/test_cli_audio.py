"""voice.cli.audio: a microphone goes through the audio front end, a file or a tone never does.

The devices are real (PyAudio on PulseAudio's null sink, as in tests/voice/audio/); the front
end is WebRTC's APM. What is checked here is the wiring: which pairs get wrapped, and that the
speaker's frames reach the front end as the echo reference. What the front end does to the
audio is tests/voice/audio/test_frontend.py's job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.voice.audio.test_audio_devices import pulse  # noqa: F401  (the fixture)
from voice.audio.base import FRAME_BYTES
from voice.audio.frontend import FrontEndSource, ReferenceSink
from voice.audio.sinks import WavRecorder
from voice.audio.sources import ToneSource, WavFileSource
from voice.audio.speech import speech_sample
from voice.audio.switch import LiveMicrophone, LiveSpeaker
from voice.cli import build_parser
from voice.cli.audio import AudioChoice
from voice.cli.options import CallOptions


@pytest.mark.usefixtures("pulse")
async def test_a_microphone_is_processed_and_the_speaker_feeds_the_echo_reference() -> None:
    choice = AudioChoice()  # the default: microphone and speaker
    assert choice.front_end and "echo cancellation" in choice.describe()
    source, sink = await choice.build()
    try:
        assert isinstance(source, FrontEndSource) and isinstance(sink, ReferenceSink)
        assert isinstance(source.inner, LiveMicrophone)  # switchable, under the front end
        assert isinstance(sink.inner, LiveSpeaker)
        assert source.front_end is sink.front_end  # one canceller sees both directions
        await sink.write_frame(bytes(FRAME_BYTES))
        frame = await source.read_frame()
        assert frame is not None and len(frame) == FRAME_BYTES
        assert (sink.front_end.far_frames, source.front_end.near_frames) == (1, 1)
    finally:
        await source.close()
        await sink.close()
    assert source.front_end.closed


@pytest.mark.usefixtures("pulse")
async def test_no_audio_processing_sends_the_microphone_as_it_is() -> None:
    args = build_parser().parse_args(["call", "bob", "--no-audio-processing"])
    choice = CallOptions.from_args(args).audio
    assert not choice.front_end and "echo" not in choice.describe()
    source, sink = await choice.build()
    try:
        assert isinstance(source, LiveMicrophone) and isinstance(sink, LiveSpeaker)
    finally:
        await source.close()
        await sink.close()


async def test_files_and_tones_are_never_processed(tmp_path: Path) -> None:
    for choice, kind in (
        (AudioChoice(play=speech_sample(), record=tmp_path / "heard.wav"), WavFileSource),
        (AudioChoice(tone=440.0, record=tmp_path / "heard2.wav"), ToneSource),
    ):
        assert not choice.front_end
        source, sink = await choice.build()
        try:
            assert isinstance(source, kind) and isinstance(sink, WavRecorder)
        finally:
            await source.close()
            await sink.close()
