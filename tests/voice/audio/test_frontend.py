"""The audio front end on a simulated laptop (tests/support/laptop.py): the echo goes, the near
end stays; and the wrappers that put it between a call and its microphone and speaker."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.laptop import (
    Room,
    Take,
    erle_db,
    place,
    process,
    record,
    talkers,
)
from voice.audio.base import FRAME_BYTES, SAMPLE_RATE, array_to_pcm, pcm_to_array
from voice.audio.frontend import (
    AudioFrontEnd,
    FrontEndConfig,
    FrontEndSource,
    ReferenceSink,
    with_front_end,
)
from voice.audio.quality import compare
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.errors import AudioError, AudioFormatError

SCENE_S = 9.0
TOTAL = round(SCENE_S * SAMPLE_RATE)
NEAR_GAIN = 0.3  # near-end speech peaks about -13.5 dBFS at the microphone


@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    return talkers()


def far_only(voices: tuple[np.ndarray, np.ndarray], delay_ms: float) -> Take:
    far, _ = voices
    return record(Room(delay_ms=delay_ms), place(far, 0.0, TOTAL), np.zeros(TOTAL))


def test_echo_is_really_there_without_the_front_end(voices: tuple[np.ndarray, np.ndarray]) -> None:
    """The control: the microphone hears the far end loudly, and passing it on removes nothing."""
    take = far_only(voices, 60)
    echo_to_noise = 10 * np.log10(np.mean(take.echo**2) / np.mean((take.mic - take.echo) ** 2))
    assert echo_to_noise > 40
    assert abs(erle_db(take, process(None, take))) < 0.5


@pytest.mark.parametrize("delay_ms", [30, 60, 120])
def test_far_end_echo_is_cancelled(voices: tuple[np.ndarray, np.ndarray], delay_ms: int) -> None:
    take = far_only(voices, delay_ms)
    assert erle_db(take, process(AudioFrontEnd(), take)) >= 25.0


def test_without_the_reference_the_echo_stays(voices: tuple[np.ndarray, np.ndarray]) -> None:
    """The echo goes because the speaker's frames reach the canceller, not because the noise
    suppressor or the gain control hide speech: with no reference nothing is cancelled."""
    take = far_only(voices, 60)
    front_end = AudioFrontEnd()
    mic = array_to_pcm(take.mic)
    out = b"".join(
        front_end.near_end(mic[i : i + FRAME_BYTES]) for i in range(0, len(mic), FRAME_BYTES)
    )
    assert erle_db(take, pcm_to_array(out).astype(np.float64)) < 10.0


def test_near_end_speech_is_kept(voices: tuple[np.ndarray, np.ndarray]) -> None:
    _, near = voices
    take = record(Room(), np.zeros(TOTAL), place(near, 0.5, TOTAL, NEAR_GAIN))
    report = compare(take.near, process(AudioFrontEnd(), take))
    assert report.pesq_wb is not None and report.pesq_wb >= 3.5
    assert report.delay_ms is not None and abs(report.delay_ms) < 20


def test_all_stages_off_is_a_pass_through(voices: tuple[np.ndarray, np.ndarray]) -> None:
    far, near = voices
    take = record(Room(), place(far, 0.0, TOTAL // 4), place(near, 0.2, TOTAL // 4, NEAR_GAIN))
    off = FrontEndConfig(False, False, False, False)
    out = process(AudioFrontEnd(off), take)
    np.testing.assert_array_equal(out, np.clip(np.rint(take.mic), -32768, 32767))


def test_frames_must_be_20_ms() -> None:
    front_end = AudioFrontEnd()
    with pytest.raises(AudioFormatError):
        front_end.far_end(bytes(FRAME_BYTES // 2))
    with pytest.raises(AudioFormatError):
        front_end.near_end(bytes(FRAME_BYTES + 2))


def test_closed_front_end_ignores_the_speaker_and_refuses_the_microphone() -> None:
    front_end = AudioFrontEnd()
    front_end.close()
    front_end.close()
    front_end.far_end(bytes(FRAME_BYTES))  # the speaker may play out after the call's mic stopped
    assert front_end.far_frames == 0
    with pytest.raises(AudioError):
        front_end.near_end(bytes(FRAME_BYTES))


def test_stream_delay_hint_is_bounded() -> None:
    with pytest.raises(ValueError):
        AudioFrontEnd(stream_delay_ms=-1)


class RecordingSource:
    def __init__(self, frames: list[bytes]) -> None:
        self.frames = list(frames)
        self.closed = False

    async def read_frame(self) -> bytes | None:
        return self.frames.pop(0) if self.frames else None

    async def close(self) -> None:
        self.closed = True


async def test_wrappers_share_one_front_end_and_close_what_they_wrap() -> None:
    tone = ToneSource(440.0, duration_s=0.1)
    frames = [f for f in [await tone.read_frame() for _ in range(5)] if f is not None]
    mic, speaker = RecordingSource(frames), MemorySink()
    source, sink = with_front_end(mic, speaker)
    assert isinstance(source, FrontEndSource) and isinstance(sink, ReferenceSink)
    assert source.front_end is sink.front_end
    for frame in frames:
        await sink.write_frame(frame)
        cleaned = await source.read_frame()
        assert cleaned is not None and len(cleaned) == FRAME_BYTES
    assert await source.read_frame() is None
    assert sink.front_end.far_frames == sink.front_end.near_frames == len(frames)
    assert speaker.pcm() == b"".join(frames)  # the speaker plays what it was given, unchanged
    await source.close()
    await sink.close()
    assert mic.closed and source.front_end.closed and speaker.closed
