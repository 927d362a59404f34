"""pyaudio devices, for real: a PulseAudio null sink stands in for the sound card.

A tone played through PyAudioSpeaker to the null sink ``vsink`` is recorded again through
PyAudioMicrophone from ``vsink.monitor`` (PULSE_SOURCE), and must come back at the same
frequency and level.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voice.audio.base import FRAME_BYTES, AudioSink, AudioSource, pcm_to_array
from voice.audio.devices import (
    MAX_BACKLOG_FRAMES,
    PyAudioMicrophone,
    PyAudioSpeaker,
    find_device,
    list_devices,
    take_fresh,
)
from voice.audio.sources import ToneSource
from voice.errors import AudioError, NoAudioDevice

REPO = Path(__file__).resolve().parents[3]


def pulse_running() -> bool:
    return subprocess.run(["pactl", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def pulse() -> Iterator[None]:
    """PulseAudio with the null sink vsink; the default source is its monitor."""
    started = not pulse_running()
    subprocess.run(["bash", str(REPO / "scripts" / "pulse.sh")], check=True)  # also adds vsink
    saved = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = "vsink.monitor"  # before any PyAudio is created
    yield
    if saved is None:
        del os.environ["PULSE_SOURCE"]
    else:
        os.environ["PULSE_SOURCE"] = saved
    if started:  # stop only the daemon this fixture started
        subprocess.run(["pulseaudio", "--kill"], capture_output=True, check=False)


def peak_hz(x: np.ndarray, rate: int = 48_000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def test_list_and_find_real_devices(pulse: None) -> None:
    devices = list_devices()
    names = [d.name for d in devices]
    assert "pulse" in names
    by_name = find_device("Pulse", "output")
    assert by_name.name == "pulse" and by_name.max_output_channels > 0
    assert find_device(by_name.index, "input") == by_name
    assert find_device(str(by_name.index), "output") == by_name


def test_bogus_device_raises_no_audio_device(pulse: None) -> None:
    with pytest.raises(NoAudioDevice):
        find_device("no-such-card-xyz", "input")
    with pytest.raises(NoAudioDevice):
        PyAudioMicrophone("no-such-card-xyz")
    with pytest.raises(NoAudioDevice):
        PyAudioSpeaker(10_000)


async def test_tone_played_to_null_sink_comes_back(pulse: None) -> None:
    mic = PyAudioMicrophone("pulse", max_queued_frames=500, max_backlog_frames=None)
    speaker = PyAudioSpeaker("pulse", max_queued_frames=500)
    assert isinstance(mic, AudioSource) and isinstance(speaker, AudioSink)
    frames: list[bytes] = []
    heard_tone = asyncio.Event()
    capturing = asyncio.Event()

    async def record() -> None:
        silent_after_tone = 0
        while silent_after_tone < 10:
            frame = await mic.read_frame()
            assert frame is not None and len(frame) == FRAME_BYTES
            frames.append(frame)
            capturing.set()
            loud = np.max(np.abs(pcm_to_array(frame))) > 1000
            if loud:
                heard_tone.set()
            elif heard_tone.is_set():
                silent_after_tone += 1

    try:
        recorder = asyncio.create_task(record())
        async with asyncio.timeout(10):
            await capturing.wait()  # capture is running before anything is played
            tone = ToneSource(440, 8000, duration_s=1.0)
            while (frame := await tone.read_frame()) is not None:
                await speaker.write_frame(frame)
            await speaker.drain()
            await recorder
    finally:
        await speaker.close()
        await mic.close()

    x = pcm_to_array(b"".join(frames)).astype(np.float64)
    per_frame = np.sqrt(np.mean(x.reshape(-1, 960) ** 2, axis=1))
    loud = np.flatnonzero(per_frame > 1000)
    assert len(loud) >= 48  # about all 50 frames of the 1 s tone came back
    steady = x[(loud[0] + 2) * 960 : (loud[-1] - 1) * 960]
    assert peak_hz(steady) == pytest.approx(440, abs=2)
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(8000 / np.sqrt(2), rel=0.05)
    assert speaker.dropped == 0 and mic.dropped == 0


async def test_close_releases_and_is_idempotent(pulse: None) -> None:
    mic = PyAudioMicrophone()
    speaker = PyAudioSpeaker()
    assert mic.device.max_input_channels > 0 and speaker.device.max_output_channels > 0
    reader = asyncio.create_task(mic.read_frame())
    await asyncio.sleep(0.05)
    await mic.close()
    await mic.close()
    async with asyncio.timeout(2):
        await reader  # a blocked reader is woken, not left hanging
    assert await mic.read_frame() is None
    await speaker.write_frame(bytes(FRAME_BYTES))
    await speaker.close()
    await speaker.close()
    with pytest.raises(AudioError):
        await speaker.write_frame(bytes(FRAME_BYTES))
    # the device is free again: it can be opened once more
    again = PyAudioMicrophone("pulse")
    async with asyncio.timeout(5):
        assert await again.read_frame() is not None
    await again.close()


async def test_slow_reader_drops_oldest_frames(pulse: None) -> None:
    mic = PyAudioMicrophone("pulse", max_queued_frames=3)
    try:
        async with asyncio.timeout(10):
            assert await mic.read_frame() is not None
            while mic.dropped == 0:  # stop reading: the queue overflows  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert mic.dropped > 0 and mic.queued == 3
    finally:
        await mic.close()


def test_no_sound_server_means_no_audio_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing to talk to, every way of opening a device fails cleanly, not with a crash."""
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-such-socket")
    monkeypatch.setenv("PULSE_RUNTIME_PATH", str(tmp_path))
    for spec in (None, "pulse", 0):
        with pytest.raises(NoAudioDevice):
            PyAudioMicrophone(spec)
        with pytest.raises(NoAudioDevice):
            PyAudioSpeaker(spec)


async def test_a_reader_that_fell_behind_gets_fresh_audio_not_stale() -> None:
    """The backlog rule of PyAudioMicrophone.read_frame (take_fresh), on a queue of numbered
    frames: a reader that keeps up gets every frame; one left behind by missed ticks skips to
    within MAX_BACKLOG_FRAMES of the newest, so a call does not stay late for good."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def fill(*numbers: int) -> None:
        for n in numbers:
            queue.put_nowait(bytes([n]))

    fill(0, 1)  # a reader on time: at most one frame waiting behind
    got = [take_fresh(await queue.get(), queue, MAX_BACKLOG_FRAMES) for _ in range(2)]
    assert got == [(b"\x00", 0), (b"\x01", 0)]
    fill(*range(10, 20))  # ten ticks missed
    frame, skipped = take_fresh(await queue.get(), queue, MAX_BACKLOG_FRAMES)
    assert (frame, skipped) == (bytes([20 - MAX_BACKLOG_FRAMES]), 10 - MAX_BACKLOG_FRAMES)
    assert queue.qsize() == MAX_BACKLOG_FRAMES - 1  # what is left is fresh
    fill(30)
    queue.put_nowait(None)  # closed meanwhile: the close still gets through
    assert take_fresh(await queue.get(), queue, 1) == (None, 3)
    fill(*range(40, 45))
    assert take_fresh(await queue.get(), queue, None) == (b"\x28", 0)  # None: every frame
