"""Choosing a device by index or name, on fixed device lists (no sound server needed)."""

from __future__ import annotations

import pytest

from voice.audio.devicelist import DeviceInfo, match_device
from voice.errors import NoAudioDevice

FAKE = [
    DeviceInfo(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 2, 44_100.0),
    DeviceInfo(1, "HDMI 0 (hw:0,3)", 0, 8, 44_100.0),
    DeviceInfo(2, "USB Headset Mic", 1, 0, 48_000.0),
    DeviceInfo(3, "pulse", 32, 32, 44_100.0),
    DeviceInfo(4, "pulseaudio-extra", 32, 32, 44_100.0),
]


def test_match_by_index_int_or_numeric_string() -> None:
    assert match_device(FAKE, 2, "input").name == "USB Headset Mic"
    assert match_device(FAKE, " 1 ", "output").index == 1


def test_match_by_name_exact_before_substring_case_insensitive() -> None:
    assert match_device(FAKE, "PULSE", "input").index == 3  # exact, though 4 also contains it
    assert match_device(FAKE, "headset", "input").index == 2
    assert match_device(FAKE, "hdmi", "output").index == 1


def test_match_respects_direction_and_reports_candidates() -> None:
    with pytest.raises(NoAudioDevice, match="no input channels"):
        match_device(FAKE, 1, "input")  # HDMI is output only
    with pytest.raises(NoAudioDevice, match="USB Headset Mic"):
        match_device(FAKE, "hdmi", "input")  # the message lists the input devices
    with pytest.raises(NoAudioDevice, match="index 99"):
        match_device(FAKE, 99, "output")
    with pytest.raises(NoAudioDevice, match="sees no input devices"):
        match_device([], "anything", "input")
