"""The call screen's device keys: i and o move the call's microphone and speaker to the next
device; the choice of the next one is pure; the switch itself runs on real PortAudio devices
under the call's real wrappers (meter, echo canceller)."""

from __future__ import annotations

import asyncio

import pytest

from tests.voice.audio.test_audio_devices import pulse  # noqa: F401  (the fixture)
from voice.audio.devicelist import DeviceInfo, DeviceKind
from voice.cli.audio import AudioChoice
from voice.errors import NoAudioDevice
from voice.ui import view
from voice.ui.devices import CallDevices, next_device
from voice.ui.meter import CallAudio, Levels
from voice.ui.screens import CallScreen

from .fakes import FakeCall, Host, screen_text

SIZE = (100, 34)


def device(index: int, name: str, inputs: int = 2, outputs: int = 2) -> DeviceInfo:
    return DeviceInfo(index, name, inputs, outputs, 48_000.0)


def test_the_next_device_goes_round_the_devices_of_that_direction() -> None:
    devices = [device(3, "headset"), device(0, "pulse"), device(1, "hdmi", inputs=0),
               device(2, "default")]  # fmt: skip
    assert next_device(devices, "output", "pulse").name == "hdmi"  # type: ignore[union-attr]
    assert next_device(devices, "input", "pulse").name == "default"  # type: ignore[union-attr]
    assert next_device(devices, "input", "headset").name == "pulse"  # type: ignore[union-attr]
    assert next_device(devices, "input", "gone").name == "pulse"  # type: ignore[union-attr]
    assert next_device([device(0, "pulse")], "input", "pulse") is None  # nothing else
    assert next_device([], "input", "pulse") is None


class FakeDevices:
    def __init__(self, names: dict[DeviceKind, str | None], refuse: bool = False) -> None:
        self.names = names
        self.refuse = refuse
        self.asked: list[DeviceKind] = []

    def name(self, kind: DeviceKind) -> str | None:
        return self.names[kind]

    async def switch_to_next(self, kind: DeviceKind) -> str:
        self.asked.append(kind)
        if self.refuse:
            raise NoAudioDevice("cannot open the input device 'headset'")
        self.names[kind] = "headset"
        return "headset"


async def test_i_and_o_switch_the_call_devices_and_the_screen_names_them() -> None:
    devices = FakeDevices({"input": "default", "output": "pulse"})
    host = Host(CallScreen(FakeCall(), None, Levels(), duration=None, devices=devices))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(host)
        assert view.devices_line("default", "pulse") in text
        assert "i Input" in text and "o Output" in text
        await pilot.press("i")
        await pilot.pause(0.2)
        assert devices.asked == ["input"]
        text = screen_text(host)
        assert "Microphone: headset" in text and "Speaker: pulse" in text
        assert [n.message for n in host._notifications] == ["Microphone: headset"]
        await pilot.press("o")
        await pilot.pause(0.2)
        assert devices.asked == ["input", "output"]
        assert view.devices_line("headset", "headset") in screen_text(host)


async def test_a_device_that_cannot_be_opened_is_a_notice_and_the_old_one_stays() -> None:
    devices = FakeDevices({"input": "default", "output": None}, refuse=True)
    host = Host(CallScreen(FakeCall(), None, Levels(), duration=None, devices=devices))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "o Output" not in screen_text(host)  # --record or --no-output: nothing to switch
        await pilot.press("o")
        await pilot.press("i")
        await pilot.pause(0.2)
        assert devices.asked == ["input"]
        notes = [n.message for n in host._notifications]
        assert notes == ["Cannot switch the input: cannot open the input device 'headset'"]
        assert "Microphone: default" in screen_text(host)


async def test_without_devices_there_are_no_device_keys() -> None:
    host = Host(CallScreen(FakeCall(), None, Levels(), duration=None, devices=None))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(host)
        assert "i Input" not in text and "Microphone:" not in text


@pytest.mark.usefixtures("pulse")
async def test_a_real_call_pair_switches_its_microphone_under_the_meter_and_the_front_end() -> None:
    audio = CallAudio(AudioChoice())  # the default microphone and speaker, echo cancelled
    await audio.refill()
    source, sink = audio(None)  # what a call gets
    devices = CallDevices(lambda: audio.current)
    try:
        before = devices.name("input")
        assert before is not None and devices.name("output") is not None
        async with asyncio.timeout(10):
            assert await source.read_frame() is not None
            name = await devices.switch_to_next("input")
            assert name != before and devices.name("input") == name
            for _ in range(5):  # the call reads on, now from the other device
                assert await source.read_frame() is not None
        assert audio.levels.input_dbfs is not None  # the meter still sees each frame
    finally:
        await source.close()
        await sink.close()
        await audio.close()
