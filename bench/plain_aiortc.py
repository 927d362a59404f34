"""The baseline: a plain aiortc DTLS-SRTP audio call between two peers in one process.

Benchmarks run it in the same process and run as our client so the comparison is fair. The SDP
is handed over directly (no signaling server), which favours the baseline. aioice skips
127.0.0.1 host candidates, so the baseline is pinned to loopback the same way as our client:
by replacing aioice's host-address lookup for the duration of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aioice.ice
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make aioice gather host candidates on 127.0.0.1 only (test network rule)."""
    original = aioice.ice.get_host_addresses

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone, paced in real time, 20 ms frames at 48 kHz mono."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._pts / SAMPLE_RATE - time.monotonic()))
        t = (np.arange(FRAME_SAMPLES) + self._pts) / SAMPLE_RATE
        pcm = (8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2")
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm.tobytes())
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


@dataclass(frozen=True)
class PlainCallTiming:
    """Seconds from dialing (createOffer) and from answering (createAnswer) to first audio."""

    dial_to_first_audio: float
    answer_to_first_audio: float
    dtls_connected: float


async def _first_frame(track: MediaStreamTrack, done: asyncio.Future[float]) -> None:
    await track.recv()
    if not done.done():
        done.set_result(time.monotonic())
    with contextlib.suppress(Exception):
        while True:
            await track.recv()


async def plain_aiortc_call(*, limit_s: float = 10.0) -> PlainCallTiming:
    """One plain aiortc call: the caller sends a tone; time until the callee decodes it."""
    caller, callee = RTCPeerConnection(), RTCPeerConnection()
    loop = asyncio.get_running_loop()
    heard: asyncio.Future[float] = loop.create_future()
    connected: asyncio.Future[float] = loop.create_future()
    tasks: list[asyncio.Task[Any]] = []

    @callee.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(_first_frame(track, heard)))

    @caller.on("connectionstatechange")
    def on_state() -> None:
        if caller.connectionState == "connected" and not connected.done():
            connected.set_result(time.monotonic())

    try:
        caller.addTrack(ToneTrack())
        t_dial = time.monotonic()
        await caller.setLocalDescription(await caller.createOffer())
        await callee.setRemoteDescription(_copy(caller.localDescription))
        t_answer = time.monotonic()
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(_copy(callee.localDescription))
        t_heard = await asyncio.wait_for(heard, limit_s)
        t_connected = await asyncio.wait_for(connected, limit_s)
        return PlainCallTiming(
            dial_to_first_audio=t_heard - t_dial,
            answer_to_first_audio=t_heard - t_answer,
            dtls_connected=t_connected - t_dial,
        )
    finally:
        for task in tasks:
            task.cancel()
        await caller.close()
        await callee.close()


def _copy(desc: RTCSessionDescription) -> RTCSessionDescription:
    return RTCSessionDescription(sdp=desc.sdp, type=desc.type)


# -- measured calls (bench/media_quality.py): speech one way, mouth-to-ear marks the other ------


class SourceTrack(MediaStreamTrack):
    """Frames from an AudioSource, paced in real time like ToneTrack (48 kHz mono s16)."""

    kind = "audio"

    def __init__(self, source: Any) -> None:
        super().__init__()
        self._source = source
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._pts / SAMPLE_RATE - loop.time()))
        pcm = await self._source.read_frame() or bytes(2 * FRAME_SAMPLES)
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


class TrackRecorder:
    """Pulls a received track as fast as aiortc delivers it; keeps mono PCM and return times."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.times: list[float] = []
        self.started = asyncio.Event()

    async def run(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                now = loop.time()
                assert isinstance(frame, AudioFrame)
                data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                mono = data.astype(np.float64).mean(axis=1)
                pcm = np.clip(np.rint(mono), -32768, 32767).astype("<i2").tobytes()
                # aiortc decodes 20 ms frames; keep the timing per 960 samples
                for i in range(0, len(pcm), 2 * FRAME_SAMPLES):
                    self.frames.append(pcm[i : i + 2 * FRAME_SAMPLES])
                    self.times.append(now)
                self.started.set()


def drop_rtp(pc: RTCPeerConnection, keep: Callable[[], bool]) -> None:
    """Inject loss on ``pc``'s outgoing RTP (not RTCP), before SRTP, like our ``send_filter``."""
    from aiortc.rtp import is_rtcp

    for sender in pc.getSenders():
        transport = sender.transport
        original = transport._send_rtp

        async def send(data: bytes, _original: Any = original) -> None:
            if is_rtcp(data) or keep():
                await _original(data)

        transport._send_rtp = send  # type: ignore[method-assign]


@dataclass
class MeasuredPlainCall:
    callee_heard: TrackRecorder  # what the caller's source sent, as the callee got it
    caller_heard: TrackRecorder  # what the callee's source sent, as the caller got it
    first_audio: float  # callee: createOffer to first decoded frame
    cpu_per_call_second: float


async def plain_aiortc_measured_call(
    *,
    caller_source: Any,
    callee_source: Any,
    seconds: float,
    keep_caller: Callable[[], bool] | None = None,
    keep_callee: Callable[[], bool] | None = None,
    first_audio_timeout: float = 10.0,
) -> MeasuredPlainCall:
    """A two-way plain aiortc call of ``seconds``; ``keep_*`` return False to drop an RTP packet."""
    caller, callee = RTCPeerConnection(), RTCPeerConnection()
    loop = asyncio.get_running_loop()
    at_callee, at_caller = TrackRecorder(), TrackRecorder()
    tasks: list[asyncio.Task[Any]] = []
    heard: asyncio.Future[float] = loop.create_future()

    @callee.on("track")
    def on_callee_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(at_callee.run(track)))

    @caller.on("track")
    def on_caller_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(at_caller.run(track)))

    async def first_heard() -> None:
        await at_callee.started.wait()
        heard.set_result(at_callee.times[0])

    try:
        caller.addTrack(SourceTrack(caller_source))
        callee.addTrack(SourceTrack(callee_source))
        t_dial = loop.time()
        await caller.setLocalDescription(await caller.createOffer())
        await callee.setRemoteDescription(_copy(caller.localDescription))
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(_copy(callee.localDescription))
        if keep_caller is not None:
            drop_rtp(caller, keep_caller)
        if keep_callee is not None:
            drop_rtp(callee, keep_callee)
        cpu0, wall0 = time.process_time(), loop.time()
        tasks.append(asyncio.ensure_future(first_heard()))
        t_heard = await asyncio.wait_for(heard, first_audio_timeout)
        await asyncio.sleep(max(0.0, seconds - (loop.time() - wall0)))
        cpu = (time.process_time() - cpu0) / (loop.time() - wall0)
        return MeasuredPlainCall(at_callee, at_caller, t_heard - t_dial, cpu)
    finally:
        for task in tasks:
            task.cancel()
        await caller.close()
        await callee.close()
