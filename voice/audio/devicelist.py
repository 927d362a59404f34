"""Which PortAudio devices exist, and which one a user means by a name or an index.

ALSA and JACK print harmless probing noise on stderr while PortAudio initialises; it is hidden
(fd 2 is pointed at /dev/null for the duration, since those C libraries write there directly).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import pyaudio

from voice.errors import NoAudioDevice

DeviceKind = Literal["input", "output"]
DeviceSpec = str | int

_stderr_lock = threading.Lock()


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as pyaudio reports it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate: float

    def supports(self, kind: DeviceKind) -> bool:
        return (self.max_input_channels if kind == "input" else self.max_output_channels) > 0


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration (C libraries write there directly)."""
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to hide
            yield
            return
        try:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def open_pyaudio() -> pyaudio.PyAudio:
    with quiet_stderr():
        return pyaudio.PyAudio()


def _info(raw: Mapping[str, str | int | float]) -> DeviceInfo:
    return DeviceInfo(
        index=int(raw["index"]),
        name=str(raw["name"]),
        max_input_channels=int(raw["maxInputChannels"]),
        max_output_channels=int(raw["maxOutputChannels"]),
        default_sample_rate=float(raw["defaultSampleRate"]),
    )


def _enumerate(pa: pyaudio.PyAudio) -> list[DeviceInfo]:
    return [_info(pa.get_device_info_by_index(i)) for i in range(pa.get_device_count())]


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio sees right now (a fresh scan each call)."""
    pa = open_pyaudio()
    try:
        return _enumerate(pa)
    finally:
        pa.terminate()


def match_device(devices: Sequence[DeviceInfo], spec: DeviceSpec, kind: DeviceKind) -> DeviceInfo:
    """Pick a device of ``kind`` by index (int or numeric string) or by name.

    Names match case-insensitively, an exact match first, then the first device whose name
    contains ``spec``. Raises NoAudioDevice, listing the candidates, when nothing fits.
    """
    usable = [d for d in devices if d.supports(kind)]
    text = spec.strip() if isinstance(spec, str) else None
    if isinstance(spec, int) or (text is not None and text.lstrip("-").isdigit()):
        index = int(spec)
        for d in devices:
            if d.index == index:
                if d.supports(kind):
                    return d
                raise NoAudioDevice(f"audio device {index} ({d.name!r}) has no {kind} channels")
        raise NoAudioDevice(f"no audio device with index {index}; {_describe(usable, kind)}")
    assert text is not None
    wanted = text.casefold()
    for d in usable:
        if d.name.casefold() == wanted:
            return d
    for d in usable:
        if wanted and wanted in d.name.casefold():
            return d
    raise NoAudioDevice(f"no {kind} audio device named {text!r}; {_describe(usable, kind)}")


def _describe(usable: Sequence[DeviceInfo], kind: DeviceKind) -> str:
    if not usable:
        return f"PortAudio sees no {kind} devices"
    return f"{kind} devices: " + ", ".join(f"{d.index}: {d.name}" for d in usable)


def find_device(spec: DeviceSpec, kind: DeviceKind) -> DeviceInfo:
    """Find a device by index or name (see :func:`match_device`); raises NoAudioDevice."""
    return match_device(list_devices(), spec, kind)


def resolve_device(pa: pyaudio.PyAudio, spec: DeviceSpec | None, kind: DeviceKind) -> DeviceInfo:
    if spec is not None:
        return match_device(_enumerate(pa), spec, kind)
    try:
        raw = (
            pa.get_default_input_device_info()
            if kind == "input"
            else pa.get_default_output_device_info()
        )
    except OSError as exc:
        raise NoAudioDevice(f"no default {kind} audio device: {exc}") from exc
    return _info(raw)
