"""pyaudio (PortAudio) microphone and speaker as an AudioSource and an AudioSink.

PortAudio calls back on its own thread. The microphone hands each captured buffer to the event
loop with ``call_soon_threadsafe`` and queues whole frames in a bounded asyncio queue; the
speaker's callback takes frames from a bounded deque and plays silence when it runs dry. Neither
ever blocks the event loop on the device, and both drop the *oldest* frame when full (counted in
``dropped``): for a live call fresh audio matters more than complete audio.

Devices are chosen by name or index (:mod:`voice.audio.devicelist`, re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping

import pyaudio

from voice.audio.base import CHANNELS, FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE, check_frame
from voice.audio.devicelist import (
    DeviceInfo,
    DeviceKind,
    DeviceSpec,
    find_device,
    list_devices,
    match_device,
    open_pyaudio,
    quiet_stderr,
    resolve_device,
)
from voice.errors import AudioError, NoAudioDevice

__all__ = [
    "DeviceInfo",
    "DeviceKind",
    "DeviceSpec",
    "PyAudioMicrophone",
    "PyAudioSpeaker",
    "find_device",
    "list_devices",
    "match_device",
    "take_fresh",
]


class _PyAudioStream:
    """Shared life cycle: open the stream at construction (errors surface early), start it on
    first use from the event loop, stop and release the device on close (off the loop)."""

    kind: DeviceKind

    def __init__(self, device: DeviceSpec | None) -> None:
        self._pa = open_pyaudio()
        self._closed = False
        self._started = False
        self.started_at: float | None = None  # time.monotonic() once PortAudio runs the stream
        self.start_requested_at: float | None = None  # time.monotonic() when it was asked to
        self._start_error: OSError | None = None  # the start failed (noticed even if no one
        # awaited it: a read that timed out leaves the start running on its thread)
        self.last_callback: float | None = None  # time.monotonic() of PortAudio's latest callback
        try:
            self.device = resolve_device(self._pa, device, self.kind)
            with quiet_stderr():
                self._stream = self._pa.open(
                    rate=SAMPLE_RATE,
                    channels=CHANNELS,
                    format=pyaudio.paInt16,
                    input=self.kind == "input",
                    output=self.kind == "output",
                    input_device_index=self.device.index if self.kind == "input" else None,
                    output_device_index=self.device.index if self.kind == "output" else None,
                    frames_per_buffer=FRAME_SAMPLES,
                    start=False,
                    stream_callback=self._callback,
                )
        except OSError as exc:
            self._pa.terminate()
            raise NoAudioDevice(f"cannot open the {self.kind} audio device: {exc}") from exc
        except BaseException:
            self._pa.terminate()
            raise

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Mapping[str, float], status: int
    ) -> tuple[bytes | None, int]:
        raise NotImplementedError

    async def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        self.start_requested_at = time.monotonic()
        try:
            await asyncio.to_thread(self._start)
        except OSError as exc:
            raise NoAudioDevice(f"cannot start the {self.kind} audio device: {exc}") from exc

    def _start(self) -> None:
        # Noted here, on the worker thread: it happens even if the awaiting task is cancelled.
        try:
            self._stream.start_stream()
        except OSError as exc:
            self._start_error = exc
            raise
        self.started_at = time.monotonic()

    async def start(self) -> None:
        """Start the stream now rather than on first use: a device swapped into a running call
        is warmed up first (a microphone drops what it hears until the first read)."""
        await self._ensure_started()

    @property
    def failed(self) -> bool:
        """Whether the device went away: its start failed, or PortAudio stopped the started
        stream on its own (or cannot even say whether it runs)."""
        if self._closed:
            return False
        if self._start_error is not None:
            return True
        if self.started_at is None:
            return False
        try:
            return not self._stream.is_active()
        except OSError:
            return True

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop the stream and release the device; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._on_close()
        await asyncio.to_thread(self._release)

    def _on_close(self) -> None:
        pass

    def _release(self) -> None:
        try:
            with contextlib.suppress(OSError):
                self._stream.stop_stream()
            self._stream.close()
        finally:
            self._pa.terminate()


MAX_BACKLOG_FRAMES = 3  # a reader this far behind gets the newest audio, not the oldest


def take_fresh(
    frame: bytes | None, queue: asyncio.Queue[bytes | None], max_backlog: int | None
) -> tuple[bytes | None, int]:
    """``frame`` (just taken from ``queue``), or a newer one if ``max_backlog`` or more still
    wait behind it; and how many were skipped.

    A live call reads one frame per 20 ms tick. Each tick it misses (a loaded machine) leaves
    one more frame waiting, and without this the call would stay that much later for good,
    up to the whole queue (500 ms); WebRTC drops captured audio the same way. A reader that
    keeps up never has a backlog, so nothing is skipped."""
    skipped = 0
    while frame is not None and max_backlog is not None and queue.qsize() >= max_backlog:
        frame = queue.get_nowait()
        skipped += 1
    return frame, skipped


class PyAudioMicrophone(_PyAudioStream):
    """An AudioSource reading 20 ms frames from a PortAudio input device.

    ``device`` is a name or index (see :func:`match_device`); None means the default input.
    At most ``max_queued_frames`` wait for the reader; older ones are dropped and counted.
    """

    kind: DeviceKind = "input"

    def __init__(
        self,
        device: DeviceSpec | None = None,
        *,
        max_queued_frames: int = 25,
        max_backlog_frames: int | None = MAX_BACKLOG_FRAMES,
    ) -> None:
        if max_queued_frames < 1:
            raise ValueError("max_queued_frames must be >= 1")
        if max_backlog_frames is not None and max_backlog_frames < 1:
            raise ValueError("max_backlog_frames must be >= 1 (or None)")
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(max_queued_frames)
        self.max_backlog_frames = max_backlog_frames  # None: hand out every frame, however old
        self._pending = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0  # frames discarded because the reader fell behind
        self.device_overflows = 0  # buffers PortAudio reported as overflowed
        super().__init__(device)

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Mapping[str, float], status: int
    ) -> tuple[bytes | None, int]:
        self.last_callback = time.monotonic()
        if status & pyaudio.paInputOverflowed:
            self.device_overflows += 1
        loop = self._loop
        if loop is None or in_data is None:
            return None, pyaudio.paContinue
        try:
            loop.call_soon_threadsafe(self._deliver, in_data)
        except RuntimeError:  # the event loop is gone: stop capturing
            return None, pyaudio.paComplete
        return None, pyaudio.paContinue

    def _deliver(self, data: bytes) -> None:
        """On the event loop: cut buffers into frames, dropping the oldest when full."""
        if self._closed:
            return
        self._pending += data
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            if self._queue.full():
                self._queue.get_nowait()
                self.dropped += 1
            self._queue.put_nowait(frame)

    @property
    def queued(self) -> int:
        """Captured frames waiting for the reader."""
        return self._queue.qsize()

    async def read_frame(self) -> bytes | None:
        """Wait for the next captured frame; None once closed."""
        if self._closed:
            return None
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        await self._ensure_started()
        frame, stale = take_fresh(await self._queue.get(), self._queue, self.max_backlog_frames)
        self.dropped += stale
        return None if self._closed else frame

    def _on_close(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wake a reader blocked in read_frame()


class PyAudioSpeaker(_PyAudioStream):
    """An AudioSink playing 20 ms frames on a PortAudio output device.

    ``device`` is a name or index; None means the default output. At most ``max_queued_frames``
    wait to be played (bounding latency); older ones are dropped and counted. When the queue runs
    dry the device plays silence and ``underruns`` counts it.
    """

    kind: DeviceKind = "output"

    def __init__(self, device: DeviceSpec | None = None, *, max_queued_frames: int = 10) -> None:
        if max_queued_frames < 1:
            raise ValueError("max_queued_frames must be >= 1")
        self.max_queued_frames = max_queued_frames
        self._frames: deque[bytes] = deque()  # append on the loop, popleft on PortAudio's thread
        self._buffer = bytearray()  # only touched by the callback thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained: asyncio.Event | None = None  # set when the queue empties, while draining
        self.dropped = 0
        self.underruns = 0
        super().__init__(device)

    @property
    def queued(self) -> int:
        """Frames written but not yet handed to the device."""
        return len(self._frames)

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Mapping[str, float], status: int
    ) -> tuple[bytes | None, int]:
        self.last_callback = time.monotonic()
        need = frame_count * 2
        while len(self._buffer) < need:
            try:
                self._buffer += self._frames.popleft()
            except IndexError:
                break
        drained, loop = self._drained, self._loop
        if drained is not None and loop is not None and not self._frames:
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                loop.call_soon_threadsafe(drained.set)
        if len(self._buffer) < need:
            if self._started:
                self.underruns += 1
            self._buffer += bytes(need - len(self._buffer))
        out = bytes(self._buffer[:need])
        del self._buffer[:need]
        return out, pyaudio.paContinue

    async def write_frame(self, pcm: bytes) -> None:
        """Queue one frame for playback; never waits for the device."""
        if self._closed:
            raise AudioError("write_frame() on a closed speaker")
        check_frame(pcm)
        while len(self._frames) >= self.max_queued_frames:
            try:
                self._frames.popleft()
            except IndexError:  # the callback took it meanwhile
                break
            self.dropped += 1
        self._frames.append(bytes(pcm))
        await self._ensure_started()

    async def drain(self) -> None:
        """Wait until every queued frame went to the device (wrap in ``asyncio.timeout``)."""
        if not self._frames:
            return
        self._drained = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            await self._drained.wait()
        finally:
            self._drained = None
