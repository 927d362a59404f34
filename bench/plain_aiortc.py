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
from collections.abc import Iterator
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
