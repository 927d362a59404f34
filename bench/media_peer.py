"""One side of a benchmark call in its own process (run inside a network namespace for netem).

    python -m bench.media_peer --impl ours|aiortc --role caller|callee --addr 10.199.0.1 \\
        --seconds 20 --out /tmp/x.npz

Talks JSON lines with the parent on stdin/stdout (signaling is not what is measured): prints
``{"description": ...}`` (ours) or ``{"sdp": ...}`` (aiortc), reads the peer's (and, for ours,
the SRTP keys) from stdin, runs the call, then saves what it sent and heard to ``--out`` and
prints ``{"done": true}``. The caller sends the looped speech sample, the callee mouth-to-ear
marks. Times are ``time.monotonic()`` (the loop clock), which all processes share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.marks import MarkSource
from bench.our_call import RecordingSource
from voice.audio.sinks import MemorySink
from voice.audio.sources import WavFileSource
from voice.audio.speech import speech_sample

if TYPE_CHECKING:  # aiortc is imported only by the aiortc peers
    from aiortc import MediaStreamTrack, RTCPeerConnection

    from bench.plain_aiortc import TrackRecorder


async def _read_line() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("parent went away")
    message: dict[str, Any] = json.loads(line)
    return message


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _sources(role: str) -> tuple[RecordingSource | None, MarkSource | None]:
    clock = asyncio.get_running_loop().time
    if role == "caller":
        return RecordingSource(WavFileSource(speech_sample(), loop=True), clock), None
    return None, MarkSource(clock)


def _save(
    out: str,
    speech: RecordingSource | None,
    marks: MarkSource | None,
    heard: bytes,
    heard_times: list[float],
    extra: dict[str, Any],
) -> None:
    np.savez(
        out,
        sent=np.frombuffer(b"".join(speech.frames), dtype="<i2") if speech else np.zeros(0),
        sent_times=np.array(speech.read_times if speech else []),
        marks=np.array([(m.index, m.freq, m.time) for m in marks.marks] if marks else []),
        heard=np.frombuffer(heard, dtype="<i2"),
        heard_times=np.array(heard_times),
        extra=json.dumps(extra),
    )


async def run_ours(args: argparse.Namespace) -> None:
    from voice.media.session import MediaSession

    loop = asyncio.get_running_loop()
    speech, marks = _sources(args.role)
    source = speech if speech is not None else marks
    assert source is not None
    sink = MemorySink(clock=loop.time)
    session = await MediaSession.create(
        controlling=args.role == "caller", source=source, sink=sink, host_addresses=[args.addr]
    )
    try:
        _say({"description": session.local_description()})
        peer = await _read_line()
        await session.connect(peer["description"])
        session.set_keys(tx=bytes.fromhex(peer["tx"]), rx=bytes.fromhex(peer["rx"]))
        session.start()
        await asyncio.sleep(args.seconds)
        stats = session.stats()
    finally:
        await session.close()
    jitter = stats.jitter
    extra = {
        "started_at": stats.started_at,
        "first_audio_at": stats.first_audio_at,
        "lost": jitter.lost if jitter else None,
        "fec_recovered": stats.playout.fec_recovered,
        "concealed": stats.playout.concealed,
    }
    _save(args.out, speech, marks, sink.pcm(), sink.arrivals, extra)
    _say({"done": True})


@contextlib.asynccontextmanager
async def _plain_peer(
    pc: RTCPeerConnection, source: RecordingSource | MarkSource | None
) -> AsyncIterator[TrackRecorder]:
    """``pc`` sends ``source`` and records what it receives; closed on the way out."""
    from bench.plain_aiortc import SourceTrack, TrackRecorder

    recorder = TrackRecorder()
    tasks: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(recorder.run(track)))

    try:
        pc.addTrack(SourceTrack(source))
        yield recorder
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()


async def _exchange_sdp(pc: RTCPeerConnection, role: str) -> None:
    """The caller's offer and the callee's answer, through the parent."""
    from aiortc import RTCSessionDescription

    if role == "caller":
        await pc.setLocalDescription(await pc.createOffer())
        _say({"sdp": pc.localDescription.sdp})
        answer = await _read_line()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    else:
        offer = await _read_line()
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        _say({"sdp": pc.localDescription.sdp})


async def run_aiortc(args: argparse.Namespace) -> None:
    import aioice.ice
    from aiortc import RTCPeerConnection

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [args.addr]
    speech, marks = _sources(args.role)
    pc = RTCPeerConnection()
    async with _plain_peer(pc, speech if speech is not None else marks) as recorder:
        await _exchange_sdp(pc, args.role)
        await asyncio.sleep(args.seconds)
    extra = {"first_audio_at": recorder.times[0] if recorder.times else None}
    _save(args.out, speech, marks, b"".join(recorder.frames), recorder.times, extra)
    _say({"done": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impl", choices=["ours", "aiortc"], required=True)
    parser.add_argument("--role", choices=["caller", "callee"], required=True)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    asyncio.run(run_ours(args) if args.impl == "ours" else run_aiortc(args))


if __name__ == "__main__":
    main()
