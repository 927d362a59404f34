"""Live devices (voice.audio.switch), for real: switching and unplugging on PulseAudio.

PortAudio (ALSA host API) lists every PCM of the ALSA configuration, so extra devices are made
by pointing ``ALSA_CONFIG_PATH`` at alsa.conf plus a file of our own, set before PortAudio
initialises (ALSA reloads its configuration once no PyAudio is alive). Each extra device is an
``asym`` PCM over one PulseAudio null sink: playback goes to the sink, capture comes from its
``.monitor``, so opening the device as a microphone records what was played to it.

Two kinds of unplugging behave differently (docs/devices.md):

- unloading a sink of the main daemon: PulseAudio moves the stream to the default device (vsink)
  itself. A microphone then stalls for 0.3-2 s, which the live microphone may take for a lost
  device; a speaker goes on seamlessly and PortAudio cannot tell. That is PulseAudio falling
  back, not us, so no test here asserts it.
- a device on a second PulseAudio daemon (tested here) whose only sink is unloaded: nothing can
  take the stream, PortAudio stops it (``is_active()`` turns false), as when an ALSA card is
  unplugged.

A null sink's monitor delivers its first buffer about 2 s after a stream starts, so these tests
wait seconds, always under ``asyncio.timeout``. vsink stays the default; every sink and daemon
started here is removed again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.voice.audio.test_audio_devices import pulse  # noqa: F401  (the fixture)
from voice.audio.base import FRAME_BYTES, FRAME_SECONDS, pcm_to_array
from voice.audio.devicelist import DeviceInfo, DeviceSpec, find_device
from voice.audio.devices import PyAudioMicrophone, PyAudioSpeaker
from voice.audio.sources import ToneSource
from voice.audio.switch import SILENCE, LiveMicrophone, LiveSpeaker, live_device
from voice.errors import AudioError, NoAudioDevice

PID = os.getpid()
A, B = f"vt{PID}a", f"vt{PID}b"  # two extra sinks/devices in the main daemon
REMOTE = f"vt{PID}remote"  # the only sink of a second daemon


def pactl(*args: str, server: str | None = None) -> str:
    where = ["-s", server] if server else []
    done = subprocess.run(["pactl", *where, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def load_sink(name: str, server: str | None = None) -> str:
    module = pactl("load-module", "module-null-sink", f"sink_name={name}", server=server)
    if server is None:
        pactl("set-default-sink", "vsink")  # other tests rely on vsink being the default
    return module


def alsa_pcm(name: str, sink: str, server: str | None = None) -> str:
    at = f'server "{server}"; ' if server else ""
    return (
        f"pcm.{name} {{ type asym\n"
        f'  playback.pcm {{ type pulse; {at}device "{sink}" }}\n'
        f'  capture.pcm {{ type pulse; {at}device "{sink}.monitor" }} }}\n'
    )


@dataclass
class SecondDaemon:
    """A PulseAudio daemon of our own: its one sink can vanish with nowhere to move streams."""

    dir: Path
    server: str = field(init=False)
    module: str | None = None

    def __post_init__(self) -> None:
        self.server = f"unix:{self.dir}/native"

    def start(self) -> None:
        env = {**os.environ, "PULSE_RUNTIME_PATH": str(self.dir), "HOME": str(self.dir)}
        subprocess.run(
            ["pulseaudio", "--system=false", "--daemonize=yes", "--exit-idle-time=-1", "-n",
             "--use-pid-file=yes", "--log-target=syslog",
             f"--load=module-native-protocol-unix socket={self.dir}/native auth-anonymous=1"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        for _ in range(50):
            if subprocess.run(["pactl", "-s", self.server, "info"], capture_output=True).returncode:
                time.sleep(0.1)
            else:
                return
        raise RuntimeError("the second PulseAudio daemon did not start")

    def plug(self) -> None:
        if self.module is None:
            self.module = load_sink(REMOTE, self.server)

    def unplug(self) -> None:
        if self.module is not None:
            pactl("unload-module", self.module, server=self.server)
            self.module = None

    def stop(self) -> None:
        pid = self.dir / "pid"
        if pid.exists():
            subprocess.run(["kill", pid.read_text().strip()], check=False)


@pytest.fixture(scope="module")
def devices(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecondDaemon]:
    """Sinks A and B in the main daemon, the REMOTE daemon, and ALSA devices for all of them."""
    request.getfixturevalue("pulse")  # PulseAudio with vsink, PULSE_SOURCE=vsink.monitor
    tmp = tmp_path_factory.mktemp("alsa")
    daemon = SecondDaemon(tmp / "p2")
    daemon.dir.mkdir()
    daemon.start()
    modules = [load_sink(A), load_sink(B)]
    conf = tmp / "asound.conf"
    pcms = [alsa_pcm(n, n) for n in (A, B)] + [alsa_pcm(REMOTE, REMOTE, daemon.server)]
    conf.write_text("".join(pcms))
    saved = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{conf}"
    try:
        daemon.plug()  # PortAudio skips a PCM whose server it cannot reach
        assert find_device(A, "output").name == A, "ALSA did not pick up the test devices"
        yield daemon
    finally:
        if saved is None:
            del os.environ["ALSA_CONFIG_PATH"]
        else:
            os.environ["ALSA_CONFIG_PATH"] = saved
        for module in modules:
            pactl("unload-module", module)
        daemon.stop()


def rms(frame: bytes) -> float:
    return float(np.sqrt(np.mean(pcm_to_array(frame).astype(np.float64) ** 2)))


def peak_hz(frame: bytes) -> float:
    x = pcm_to_array(frame).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 48_000)[int(np.argmax(spectrum))])


class Recorder:
    """Records one device (a sink's monitor) in the background, with arrival times."""

    def __init__(self, device: DeviceSpec | None) -> None:
        self.mic = PyAudioMicrophone(device, max_queued_frames=500, max_backlog_frames=None)
        self.frames: list[tuple[float, bytes]] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while (frame := await self.mic.read_frame()) is not None:
            self.frames.append((time.monotonic(), frame))

    async def running(self) -> None:
        async with asyncio.timeout(10):
            while not self.frames:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    def tones(self) -> set[float]:
        """The tones heard, to the nearest 100 Hz (loud frames only)."""
        return {round(peak_hz(f), -2) for _, f in self.frames if rms(f) > 1000}

    async def close(self) -> None:
        await self.mic.close()
        await self._task


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for recorder in made:
        await recorder.close()


async def play(speaker: LiveSpeaker | PyAudioSpeaker, hz: float, seconds: float) -> None:
    """Write a tone in real time (the pace of a call's receive loop)."""
    tone = ToneSource(hz, 8000)
    start = time.monotonic()
    for n in range(int(seconds / FRAME_SECONDS)):
        frame = await tone.read_frame()
        assert frame is not None
        await speaker.write_frame(frame)
        await asyncio.sleep(max(0.0, start + (n + 1) * FRAME_SECONDS - time.monotonic()))


async def test_speaker_switch_moves_what_is_played(
    devices: SecondDaemon, recorders: list[Recorder]
) -> None:
    recorders += [Recorder(A), Recorder(B)]
    for r in recorders:
        await r.running()
    speaker = LiveSpeaker(A)
    try:
        async with asyncio.timeout(20):
            await play(speaker, 440, 3.0)  # a null sink starts after ~2 s
            playing = asyncio.create_task(play(speaker, 440, 10.0))  # writes go on meanwhile
            assert await speaker.switch(B) == B
            playing.cancel()
            assert speaker.device_name == B
            await play(speaker, 880, 3.0)  # written after the switch
        await asyncio.sleep(1.0)
    finally:
        await speaker.close()
        await speaker.close()
    heard_a, heard_b = recorders[0].tones(), recorders[1].tones()
    assert 400 in heard_a and 900 not in heard_a  # what came after the switch never reached A
    assert 900 in heard_b


async def read_for(mic: LiveMicrophone, seconds: float, per_read: float) -> list[bytes]:
    """Read for ``seconds``; every single read must finish within ``per_read``."""
    frames: list[bytes] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        async with asyncio.timeout(per_read):
            frame = await mic.read_frame()
        assert frame is not None and len(frame) == FRAME_BYTES
        frames.append(frame)
    return frames


async def test_microphone_switch_keeps_frames_coming(devices: SecondDaemon) -> None:
    tone_player = PyAudioSpeaker(A)  # A's monitor hears a tone, B's hears silence
    playing = asyncio.create_task(play(tone_player, 440, 30.0))
    mic = LiveMicrophone(B)
    try:
        async with asyncio.timeout(5):
            assert await mic.read_frame() is not None  # B is running
        before = await read_for(mic, 0.5, per_read=0.3)
        reading = asyncio.create_task(read_for(mic, 6.0, per_read=0.3))  # never a gap > 0.3 s
        await asyncio.sleep(0.5)
        async with asyncio.timeout(10):
            assert await mic.switch(A) == A
        during = await reading
        after = await read_for(mic, 1.0, per_read=0.3)
    finally:
        playing.cancel()
        await mic.close()
        await tone_player.close()
    assert max(rms(f) for f in before) < 100
    assert len(during) > 200  # about 50 frames a second throughout
    assert min(rms(f) for f in after) > 1000  # now it is A, where the tone plays


async def test_vanished_remote_speaker_falls_back_with_one_notice(
    devices: SecondDaemon, recorders: list[Recorder]
) -> None:
    recorders.append(Recorder(None))  # vsink.monitor
    notices: list[str] = []
    devices.plug()
    speaker = LiveSpeaker(REMOTE, on_notice=notices.append)
    try:
        await recorders[0].running()
        async with asyncio.timeout(20):
            await play(speaker, 440, 2.5)
            devices.unplug()  # PortAudio stops the stream: nowhere to move it
            await play(speaker, 880, 4.0)  # never raises; goes to the default after a notice
        await asyncio.sleep(0.5)
        assert speaker.device_name == "default"
    finally:
        await speaker.close()
        devices.plug()
    assert notices == [f"The output device '{REMOTE}' went away: using the default device."]
    assert 900 in recorders[0].tones()


async def test_vanished_remote_microphone_falls_back_with_one_notice(
    devices: SecondDaemon,
) -> None:
    notices: list[str] = []
    devices.plug()
    mic = LiveMicrophone(REMOTE, on_notice=notices.append)
    try:
        async with asyncio.timeout(5):
            assert await mic.read_frame() is not None
        devices.unplug()
        frames = await read_for(mic, 4.0, per_read=4.0)
        assert mic.device_name == "default"
    finally:
        await mic.close()
        devices.plug()
    assert notices == [f"The input device '{REMOTE}' went away: using the default device."]
    assert len(frames) > 50


async def test_switching_to_a_missing_device_keeps_the_old_one(devices: SecondDaemon) -> None:
    mic, speaker = LiveMicrophone(A), LiveSpeaker(A)
    try:
        async with asyncio.timeout(5):
            assert await mic.read_frame() is not None
        for live in (mic, speaker):
            with pytest.raises(NoAudioDevice):
                await live.switch("no-such-headset-xyz")
            assert live.device_name == A
        await speaker.write_frame(SILENCE)
        await read_for(mic, 0.5, per_read=0.3)  # still running
    finally:
        await mic.close()
        await speaker.close()


# --- the fallback to nothing, with a stand-in opener -----------------------------------------


class FakeStream:
    """A device stream that fails on demand; the opener below refuses the default."""

    def __init__(self, name: str) -> None:
        self.device = DeviceInfo(0, name, 1, 1, 48_000.0)
        self.started_at: float | None = None
        self.start_requested_at: float | None = None
        self.last_callback: float | None = None
        self.failed = False
        self.closed = False
        self.written: list[bytes] = []

    async def start(self) -> None:
        self.started_at, self.last_callback = time.monotonic() - 1.0, time.monotonic()

    async def read_frame(self) -> bytes | None:
        if self.failed:
            raise AudioError("gone")
        await asyncio.sleep(FRAME_SECONDS)
        return b"\x01" * FRAME_BYTES

    async def write_frame(self, pcm: bytes) -> None:
        self.written.append(pcm)

    async def close(self) -> None:
        self.closed = True


def no_default(device: DeviceSpec | None) -> FakeStream:
    if device is None:
        raise NoAudioDevice("no default input audio device")
    return FakeStream(str(device))


async def test_microphone_without_any_device_gives_silence() -> None:
    notices: list[str] = []
    mic = LiveMicrophone("headset", on_notice=notices.append, opener=no_default)
    assert live_device(mic) is mic
    headset = mic._device
    assert isinstance(headset, FakeStream)
    assert await mic.read_frame() == b"\x01" * FRAME_BYTES
    headset.failed = True
    async with asyncio.timeout(1):
        frames = [await mic.read_frame() for _ in range(5)]
    assert frames == [SILENCE] * 5 and headset.closed
    assert mic.device_name == "no device"
    assert len(notices) == 1 and notices[0].startswith(
        "The input device 'headset' went away and the default device cannot be opened"
    )
    assert notices[0].endswith("sending silence.")
    assert await mic.switch("usb") == "usb"  # a switch brings a device back
    assert await mic.read_frame() == b"\x01" * FRAME_BYTES
    await mic.close()
    await mic.close()
    assert await mic.read_frame() is None


async def test_speaker_without_any_device_discards(caplog: pytest.LogCaptureFixture) -> None:
    speaker = LiveSpeaker("headset", opener=no_default)  # no on_notice: logged
    headset = speaker._device
    assert isinstance(headset, FakeStream)
    headset.started_at, headset.failed = time.monotonic(), True
    with caplog.at_level("WARNING", logger="voice.audio"):
        async with asyncio.timeout(1):
            for _ in range(3):
                await speaker.write_frame(SILENCE)  # discarded, never raises
    assert headset.written == [] and headset.closed
    assert "The output device 'headset' went away" in caplog.text
    assert caplog.text.count("went away") == 1
    await speaker.close()
    with pytest.raises(AudioError):
        await speaker.write_frame(SILENCE)


async def test_a_default_that_fails_at_once_is_not_reopened_in_a_loop() -> None:
    notices: list[str] = []
    opened: list[FakeStream] = []

    def default_dies(device: DeviceSpec | None) -> FakeStream:
        stream = FakeStream(str(device) if device is not None else "default")
        stream.failed = device is None  # the default opens, then fails on first use
        opened.append(stream)
        return stream

    mic = LiveMicrophone("headset", on_notice=notices.append, opener=default_dies)
    opened[0].failed = True  # the headset goes away
    async with asyncio.timeout(2):
        frames = [await mic.read_frame() for _ in range(5)]
    assert frames == [SILENCE] * 5 and mic.device_name == "no device"
    assert [s.device.name for s in opened] == ["headset", "default"]  # reopened once, no more
    assert len(notices) == 2 and notices[1].endswith("sending silence.")
    await mic.close()
