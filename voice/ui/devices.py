"""The call screen's device keys: move the call's microphone or speaker to the next device.

Only a call whose audio is a device can switch (``--play``, ``--tone``, ``--record`` and the
like have nothing to switch): :class:`CallDevices` finds the live device under the call's
wrappers (the meter, the echo canceller; :func:`voice.audio.switch.live_device`). The next
device is the one after the current one among those PortAudio lists for that direction, in
index order, round and round. A device that goes away by itself is the live device's business:
it falls back to the default and logs a warning, which the screen shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from voice.audio.base import AudioSink, AudioSource
from voice.audio.devicelist import DeviceInfo, DeviceKind, list_devices
from voice.audio.switch import LiveMicrophone, LiveSpeaker, live_device

__all__ = ["CallDevices", "next_device"]


def next_device(devices: Sequence[DeviceInfo], kind: DeviceKind, current: str) -> DeviceInfo | None:
    """The device after ``current`` (by name) among those of ``kind``, in index order; the
    first one if ``current`` is not among them; None if there is no other device at all."""
    usable = sorted((d for d in devices if d.supports(kind)), key=lambda d: d.index)
    names = [d.name for d in usable]
    if current in names:
        at = names.index(current)
        others = usable[at + 1 :] + usable[:at]
        return others[0] if others else None
    return usable[0] if usable else None


class CallDevices:
    """The devices of the call in progress (``current()`` gives its source and sink, or None)."""

    def __init__(
        self,
        current: Callable[[], tuple[AudioSource, AudioSink] | None],
        scan: Callable[[], list[DeviceInfo]] = list_devices,
    ) -> None:
        self._current = current
        self._scan = scan

    def live(self, kind: DeviceKind) -> LiveMicrophone | LiveSpeaker | None:
        pair = self._current()
        if pair is None:
            return None
        return live_device(pair[0] if kind == "input" else pair[1])

    def name(self, kind: DeviceKind) -> str | None:
        """The device the call uses now for ``kind``; None when it is not a device."""
        live = self.live(kind)
        return None if live is None else live.device_name

    async def switch_to_next(self, kind: DeviceKind) -> str:
        """Move to the next device of ``kind`` and return its name (NoAudioDevice if it cannot
        be opened: the old one goes on; LookupError if there is nothing to switch)."""
        live = self.live(kind)
        if live is None:
            raise LookupError(f"this call's {kind} is not an audio device")
        devices = await asyncio.to_thread(self._scan)  # PortAudio's scan blocks
        chosen = next_device(devices, kind, live.device_name)
        if chosen is None:
            raise LookupError(f"no other {kind} device")
        return await live.switch(chosen.index)
