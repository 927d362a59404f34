"""A live microphone and speaker whose device can be switched, or lost, in the middle of a call.

:class:`LiveMicrophone` (an AudioSource) and :class:`LiveSpeaker` (an AudioSink) each own one
current PortAudio stream. :meth:`~_LiveDevice.switch` opens and warms up the new device while the
old one still plays or records, then swaps it in and closes the old one, so a read or write in
progress never notices. The front end wraps the live object, not the device, so the echo
canceller survives a switch.

A device that goes away is noticed by what PortAudio actually does (docs/devices.md): its stream
stops on its own (``failed``), a call on it raises, or a running microphone stops delivering.
The live object then falls back to the default device and says so through ``on_notice``; if
even the default cannot be opened, the microphone gives silence and the speaker discards, so
the call goes on. Nothing here waits on a device without a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from voice.audio.base import FRAME_BYTES, FRAME_SECONDS, check_frame
from voice.audio.devicelist import DeviceInfo, DeviceKind, DeviceSpec
from voice.errors import AudioError, NoAudioDevice

log = logging.getLogger("voice.audio")

Notice = Callable[[str], None]
SILENCE = bytes(FRAME_BYTES)

POLL_S = 0.1  # how often a waiting reader looks at the device's health
STALL_S = 0.5  # a running microphone silent this long has gone away
START_S = 5.0  # a started microphone that never delivers within this has gone away
WARM_UP_S = 3.0  # at most this long for a new device to run before it is swapped in anyway
STEADY_S = 0.1  # a callback this long after the start means the device runs in real time
REFALL_S = 10.0  # a second loss this soon after a fallback goes silent instead of reopening


class _Stream(Protocol):
    """What the live objects need of a PortAudio stream (PyAudioMicrophone/PyAudioSpeaker)."""

    device: DeviceInfo
    started_at: float | None
    start_requested_at: float | None
    last_callback: float | None

    @property
    def failed(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MicStream(_Stream, Protocol):
    async def read_frame(self) -> bytes | None: ...


class SpeakerStream(_Stream, Protocol):
    async def write_frame(self, pcm: bytes) -> None: ...


S = TypeVar("S", bound=_Stream)


def _open_microphone(device: DeviceSpec | None) -> MicStream:
    from voice.audio.devices import PyAudioMicrophone

    return PyAudioMicrophone(device)


def _open_speaker(device: DeviceSpec | None) -> SpeakerStream:
    from voice.audio.devices import PyAudioSpeaker

    return PyAudioSpeaker(device)


def _log_notice(text: str) -> None:
    log.warning("%s", text)


class _LiveDevice(Generic[S]):
    """Switching and fallback, shared by both directions; ``_device`` is None when silent."""

    kind: DeviceKind

    def __init__(
        self,
        device: DeviceSpec | None,
        opener: Callable[[DeviceSpec | None], S],
        on_notice: Notice | None,
    ) -> None:
        self._opener = opener
        self.on_notice: Notice = on_notice or _log_notice
        self._device: S | None = opener(device)  # NoAudioDevice here fails the call early
        self._lock = asyncio.Lock()
        self._closed = False
        self._fell_back_at: float | None = None  # time.monotonic() of the last fallback

    @property
    def device_name(self) -> str:
        """The current device's name as PortAudio gives it (what the UI shows)."""
        return "no device" if self._device is None else self._device.device.name

    @property
    def closed(self) -> bool:
        return self._closed

    async def switch(self, device: DeviceSpec | None) -> str:
        """Move to ``device`` (None: the default) and return its name. The new device is opened
        and warmed up before the old one stops; if it cannot be opened, NoAudioDevice is raised
        and the old one goes on."""
        async with self._lock:
            new = await self._open(device)
            try:
                await _warm_up(new)
            except BaseException:
                await _close_quietly(new)
                raise
            if self._closed:
                await _close_quietly(new)
                raise AudioError(f"switch() on a closed {self.kind} stream")
            old, self._device = self._device, new
            self._fell_back_at = None  # the user's choice: a later loss may fall back again
        await _close_quietly(old)
        return new.device.name

    async def _open(self, device: DeviceSpec | None) -> S:
        """Open off the event loop (PortAudio blocks); a cancelled open is closed when done."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._opener, device))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_when_opened)
            raise
        except NoAudioDevice:
            raise
        except (OSError, AudioError) as exc:
            raise NoAudioDevice(f"cannot open the {self.kind} device {device!r}: {exc}") from exc

    async def _fall_back(self, lost: S) -> None:
        """Replace ``lost`` (if still current) by the default device, or by nothing."""
        async with self._lock:
            if lost is not self._device or self._closed:
                return  # a switch or another fallback got there first
            name = lost.device.name
            now = time.monotonic()
            again = self._fell_back_at is not None and now - self._fell_back_at < REFALL_S
            self._fell_back_at = now
            try:
                if again:  # the default we fell back to failed at once: do not loop on it
                    raise NoAudioDevice("it failed too, just now")
                self._device = await self._open(None)
            except NoAudioDevice as exc:
                self._device = None
                self._notify(
                    f"The {self.kind} device {name!r} went away and the default "
                    f"device cannot be opened ({exc}): {self._silent_means}."
                )
            else:
                self._notify(
                    f"The {self.kind} device {name!r} went away: using the default device."
                )
        await _close_quietly(lost)

    _silent_means = "the call goes on without it"

    def _notify(self, text: str) -> None:
        try:
            self.on_notice(text)
        except Exception:  # a broken callback must not stop the audio
            log.exception("the audio notice callback failed")

    async def close(self) -> None:
        """Close the current device; idempotent."""
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            device, self._device = self._device, None
        await _close_quietly(device)


class LiveMicrophone(_LiveDevice[MicStream]):
    """An AudioSource reading from the current input device, which can change under a reader.

    ``opener`` builds a device stream from a spec (PyAudioMicrophone by default; tests pass
    another). Without a device it gives silence at the real-time pace of a microphone.
    """

    kind: DeviceKind = "input"
    _silent_means = "sending silence"

    def __init__(
        self,
        device: DeviceSpec | None = None,
        *,
        on_notice: Notice | None = None,
        opener: Callable[[DeviceSpec | None], MicStream] = _open_microphone,
        stall_s: float = STALL_S,
    ) -> None:
        super().__init__(device, opener, on_notice)
        self.stall_s = stall_s

    async def read_frame(self) -> bytes | None:
        """The next frame from whichever device is current; None only once closed."""
        while not self._closed:
            device = self._device
            if device is None:
                await asyncio.sleep(FRAME_SECONDS)
                return None if self._closed else SILENCE
            frame = await self._read_from(device)
            if frame is not None:
                return frame
        return None

    async def _read_from(self, device: MicStream) -> bytes | None:
        """One frame, or None after a short wait, a switch or a fallback (the caller retries)."""
        try:
            frame = await asyncio.wait_for(device.read_frame(), POLL_S)
        except TimeoutError:
            frame = None
        except (OSError, AudioError):
            await self._fall_back(device)
            return None
        if frame is None and device is self._device and self._gone(device):
            await self._fall_back(device)
        return frame

    def _gone(self, device: MicStream) -> bool:
        if device.failed or device.closed:
            return True
        now = time.monotonic()
        if device.last_callback is not None:
            return now - device.last_callback > self.stall_s
        started = device.started_at or device.start_requested_at  # a start may hang in PortAudio
        return started is not None and now - started > START_S


class LiveSpeaker(_LiveDevice[SpeakerStream]):
    """An AudioSink playing on the current output device, which can change between writes.

    ``opener`` builds a device stream from a spec (PyAudioSpeaker by default). Without a device
    it discards what it is given.
    """

    kind: DeviceKind = "output"
    _silent_means = "discarding what the call plays"

    def __init__(
        self,
        device: DeviceSpec | None = None,
        *,
        on_notice: Notice | None = None,
        opener: Callable[[DeviceSpec | None], SpeakerStream] = _open_speaker,
    ) -> None:
        super().__init__(device, opener, on_notice)

    async def write_frame(self, pcm: bytes) -> None:
        """Queue one frame on the current device; never raises because a device went away."""
        if self._closed:
            raise AudioError("write_frame() on a closed speaker")
        check_frame(pcm)
        for _ in range(3):  # the device may be replaced meanwhile; then try the new one
            device = self._device
            if device is None:
                return
            if device.failed:
                await self._fall_back(device)
                continue
            try:
                await device.write_frame(pcm)
                return
            except (OSError, AudioError):
                if device is self._device:
                    await self._fall_back(device)


async def _warm_up(stream: _Stream) -> None:
    """Start ``stream`` and wait (bounded) until it runs in real time: a sound server may take
    seconds to deliver its first buffer, and the old device covers that time."""
    try:
        await stream.start()
    except (OSError, AudioError) as exc:
        raise NoAudioDevice(f"cannot start the audio device {stream.device.name!r}: {exc}") from exc
    deadline = time.monotonic() + WARM_UP_S
    while time.monotonic() < deadline:
        if stream.failed:
            raise NoAudioDevice(f"the audio device {stream.device.name!r} stopped at once")
        started, last = stream.started_at, stream.last_callback
        if started is not None and last is not None and last - started >= STEADY_S:
            return
        await asyncio.sleep(FRAME_SECONDS)


def _close_when_opened(opening: asyncio.Task[S]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        task = asyncio.ensure_future(_close_quietly(opening.result()))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Future[None]] = set()  # keeps the background closes referenced


async def _close_quietly(stream: _Stream | None) -> None:
    """Close a device that may already be broken; a failure to close it changes nothing."""
    if stream is None:
        return
    with contextlib.suppress(OSError, AudioError):
        await stream.close()


def live_device(stream: object) -> LiveMicrophone | LiveSpeaker | None:
    """The live device inside a chain of wrappers (each keeping the next in ``inner``), such as
    the front end's: what a UI switches."""
    for _ in range(16):
        if isinstance(stream, LiveMicrophone | LiveSpeaker):
            return stream
        stream = getattr(stream, "inner", None)
        if stream is None:
            return None
    return None
