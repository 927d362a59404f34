"""A group call's audio: our frames out (PCM -> Opus -> SFrame -> signature), the others' in
(signature -> SFrame -> Opus -> PCM per sender, and a mix).

Out: aiortc asks for a frame every 20 ms from its own pacing (voice.group.frames), so the
source is read ahead by a task into a short queue and a missing frame is silence; a call
without a source (yet) sends encoded silence, so receivers learn our feed before we talk.
In: every payload is checked in the order the design fixes (docs/group-calls.md): the
signature first (a frame under another member's KID is ``forged``), then SFrame (``bad_sframe``:
unknown KID, replay, bad tag), then Opus; each failure is dropped and counted. Never logged:
keys, audio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from voice.audio.base import FRAME_BYTES, AudioSink, AudioSource
from voice.errors import CodecError, ForgedFrame, SFrameError
from voice.group.frameauth import FrameSigner, FrameVerifier
from voice.group.keys import OwnSender, PeerKeys
from voice.media.opus import OpusDecoder, OpusEncoder

__all__ = ["Hearing", "OwnStream"]

_SILENCE = bytes(FRAME_BYTES)
READ_AHEAD = 25  # frames read ahead: aiortc catches up on a late loop back to back


class OwnStream:
    """Our sending side; ``sender`` is set (and rolled) by the session's key layer."""

    def __init__(self, signer: FrameSigner, sender: OwnSender) -> None:
        self.signer = signer
        self.sender = sender
        self.encoder = OpusEncoder()
        self._pcm: collections.deque[bytes] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self.sent = 0

    def play(self, source: AudioSource) -> None:
        """Send ``source`` from now on (replacing any before it), then silence."""
        self.stop()
        self._pcm.clear()
        self._reader = asyncio.create_task(self._read(source))

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def _read(self, source: AudioSource) -> None:
        try:
            while True:
                if len(self._pcm) >= READ_AHEAD:
                    await asyncio.sleep(0.005)
                    continue
                pcm = await source.read_frame()
                if pcm is None:
                    return
                self._pcm.append(pcm)
        finally:
            await source.close()

    def next_frame(self) -> bytes:
        """One signed SFrame of 20 ms of Opus (aiortc's call, every 20 ms)."""
        pcm = self._pcm.popleft() if self._pcm else _SILENCE
        self.sent += 1
        return self.signer.sign(self.sender.protect(self.encoder.encode(pcm)))

    def close(self) -> None:
        self.stop()
        self.encoder.close()


MAX_QUEUED = 50  # decoded frames (1 s) waiting for one sender's sink; a flood cannot grow it
CLOSE_S = 2.0  # at most this long to write out what is queued when the call ends


class Hearing:
    """Every other member's frames in: checked, decoded, handed to sinks.

    ``sink_for(user)`` gives the sink of one sender's audio (e.g. a WAV per member), ``mixed``
    gets the sum of every sender's latest frame every 20 ms (clipped)."""

    def __init__(
        self,
        peers: PeerKeys,
        *,
        sink_for: Callable[[str], AudioSink] | None = None,
        mixed: AudioSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peers = peers
        self.verifier = FrameVerifier({})
        self.names: dict[int, str] = {}  # member index -> username (this epoch's roster)
        self.sink_for = sink_for
        self.mixed = mixed
        self.clock = clock
        self.dropped: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()  # authenticated frames per sender
        self._decoders: dict[int, OpusDecoder] = {}
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self._latest: dict[str, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []
        if mixed is not None:
            self._tasks.append(asyncio.create_task(self._mix(mixed)))

    def receive(self, payload: bytes) -> str | None:
        """One payload as Janus forwarded it; the member whose signed, sealed frame it was
        (None if it was refused). Never raises."""
        try:
            sframe = self.verifier.verify(payload)
        except ForgedFrame:
            self.dropped["forged"] += 1
            return None
        try:
            index, frame = self.peers.unprotect(sframe, self.clock())
        except SFrameError:
            self.dropped["bad_sframe"] += 1
            return None
        user = self.names.get(index)
        if user is None:
            self.dropped["no_member"] += 1
            return None
        decoder = self._decoders.get(index)
        if decoder is None:
            decoder = self._decoders[index] = OpusDecoder()
        try:
            pcm = decoder.decode(frame)
        except CodecError:
            self.dropped["bad_opus"] += 1
            return user  # its signature and key were its sender's all the same
        self.frames[user] += 1
        self._latest[user] = pcm
        if self.sink_for is not None:
            queue = self._queue(user)
            if queue.full():  # its sink fell behind (or a member floods): the oldest goes
                queue.get_nowait()
                self.dropped["late"] += 1
            queue.put_nowait(pcm)
        return user

    def forget(self, index: int) -> None:
        """Member ``index`` left: its decoder goes (a newcomer never gets its index)."""
        decoder = self._decoders.pop(index, None)
        if decoder is not None:
            decoder.close()
        user = self.names.pop(index, None)
        if user is not None:
            self._latest.pop(user, None)

    def _queue(self, user: str) -> asyncio.Queue[bytes]:
        queue = self._queues.get(user)
        if queue is None and self.sink_for is not None:
            queue = self._queues[user] = asyncio.Queue(MAX_QUEUED)
            self._tasks.append(asyncio.create_task(self._write(self.sink_for(user), queue)))
        assert queue is not None
        return queue

    @staticmethod
    async def _write(sink: AudioSink, queue: asyncio.Queue[bytes]) -> None:
        try:
            while True:
                await sink.write_frame(await queue.get())
        finally:  # what is queued is written, but a sink that hangs cannot hang the close
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_S):
                    while not queue.empty():
                        await sink.write_frame(queue.get_nowait())
                    await sink.close()

    async def _mix(self, sink: AudioSink) -> None:
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        try:
            while True:
                n += 1
                await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
                frames = [np.frombuffer(f, dtype="<i2") for f in self._latest.values()]
                self._latest.clear()
                total = np.sum(frames, axis=0, dtype=np.int32) if frames else np.zeros(960)
                await sink.write_frame(np.clip(total, -32768, 32767).astype("<i2").tobytes())
        finally:
            await sink.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for decoder in self._decoders.values():
            decoder.close()
        self._decoders.clear()
