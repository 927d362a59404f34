"""How many two-way calls one process carries in real time, counted from full calls.

Each call is what a user has (issue 12, "count capacity honestly"): two phones (``Phone``) with
their own identities, logged in to a real signaling server, dialling and answering through it
with the committed key agreement, then SRTP both ways on loopback. Every phone of every call
lives in this one process (both ends: 2 N phones for N calls); the server is its own process, as
in a deployment. The audio:

* the sources are paced like microphones: each delivers one 20 ms frame of speech per 20 ms on
  its own clock phase (a random offset per source, as separate sound cards have), and a frame
  read late is handed over at once, as a device's buffered capture is;
* the sinks consume what they get: a level meter (the RMS of every frame), as a call screen
  shows one.

Measured over a window after a warm-up, per step of the ramp, at the receivers (a frame a
sender skipped shows there as a gap, so it is not counted twice):

* ``glitched``: frames played from concealment (Opus PLC, faded, comfort noise), rebuilt from
  FEC, with nothing to play, skipped by the playout clock, or dropped by the jitter buffer to
  shrink, as a fraction of the frames due, over all receivers and for the worst one;
* ``sender_skips``: ticks the senders skipped (reported, not counted again);
* ``complexity``: the Opus encoder complexity the load governor allowed, lowest and at the end
  (9 when unloaded; it steps down while encoding or the loop runs late, and up again slowly:
  the steps share one process, so a step starts where the one before left it);
* CPU of this process, and of the loop thread alone.

A step is real-time when at most 0.5 % of all the frames due glitched, and at most 1 % of any
one receiver's. The ramp stops at the first step that is not.

    .venv/bin/python -m bench.capacity                    # 20, 25, 30, 35 calls; 20 s windows
    .venv/bin/python -m bench.capacity --calls 30 --seconds 10

Prints a table and writes bench/results/capacity.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import write_results
from voice.audio.base import FRAME_BYTES, FRAME_SECONDS, AudioSink, AudioSource, check_frame
from voice.audio.sources import WavFileSource
from voice.audio.speech import speech_sample
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.media.clock import MediaClock
from voice.media.opus import library_version
from voice.media.receiver import frame_rms
from voice.media.stats import MediaStats
from voice.phone import Call, Phone, PhoneConfig

RESULTS = Path(__file__).resolve().parent / "results" / "capacity.json"
REALTIME_LIMIT = 0.005  # glitched frames, of all those due
WORST_LIMIT = 0.01  # ... and of any one receiver's
WARMUP_S = 3.0


class PacedSource:
    """Speech frames at one per 20 ms on the source's own clock, like a microphone.

    The first frame is due at ``start + phase``; a reader that comes early waits for it (a
    capture callback has not delivered it yet), one that comes late gets it at once (the device
    buffered it). Frames are looped from a precomputed list: the bench measures the call, not a
    WAV decoder.
    """

    def __init__(self, frames: list[bytes], offset: int, phase: float) -> None:
        self._frames = frames
        self._i = offset % len(frames)
        self._phase = phase
        self._next: float | None = None

    async def read_frame(self) -> bytes | None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._next is None:
            self._next = now + self._phase
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next += FRAME_SECONDS
        self._i = (self._i + 1) % len(self._frames)
        return self._frames[self._i]

    async def close(self) -> None:
        return None


class MeteredSink:
    """Consumes the audio: a level meter per frame."""

    def __init__(self) -> None:
        self.frames = 0
        self.level = 0.0

    async def write_frame(self, pcm: bytes) -> None:
        check_frame(pcm)
        self.level = frame_rms(pcm)
        self.frames += 1

    async def close(self) -> None:
        return None


@dataclass
class Pair:
    """One call: the caller's and the callee's phones, and their calls once connected."""

    caller: Phone
    callee: Phone
    callee_name: str
    calls: list[Call] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def signaling_server(port: int) -> Any:
    """A real server process on loopback, with the per-address limits opened for 2 N phones
    that all come from 127.0.0.1 (a deployment sees them from N addresses)."""
    args = [
        sys.executable, "-m", "signaling", "--port", str(port), "--http-port", "0",
        "--db", ":memory:", "--log-level", "WARNING",
        "--max-connections-per-ip", "1000", "--registration-ip-burst", "1000",
        "--registrations-per-ip-per-hour", "100000", "--registration-burst", "1000",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:  # not a pipe: nobody reads it during the run
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 15
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2),
                ):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"signaling server did not start: {log.read().decode()}")
                time.sleep(0.05)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def speech_frames() -> list[bytes]:
    source, frames = WavFileSource(speech_sample()), []
    while (frame := await source.read_frame()) is not None:
        frames.append(frame)
    return frames


AudioFactory = Callable[[Call], tuple[AudioSource, AudioSink]]


def audio_factory(
    frames: list[bytes], rng: random.Random, sinks: list[MeteredSink]
) -> AudioFactory:
    def make(_call: Call) -> tuple[AudioSource, AudioSink]:
        sink = MeteredSink()
        sinks.append(sink)
        offset = rng.randrange(len(frames))
        return PacedSource(frames, offset, rng.uniform(0.0, FRAME_SECONDS)), sink

    return make


async def make_phone(url: str, user: str, home: Path, audio: AudioFactory) -> Phone:
    folder = home / user
    folder.mkdir(mode=0o700)
    config = PhoneConfig(
        server_url=url,
        user=user,
        identity=Identity.load_or_create(folder / "identity.key"),
        contacts=ContactBook(folder / "contacts.json"),
        relay="never",  # loopback, no TURN server: the bench measures the engine, not a relay
    )
    return await Phone.connect(config, audio=audio, auto_answer=True)


@contextlib.asynccontextmanager
async def phones(url: str, n: int, audio: AudioFactory) -> AsyncIterator[list[Pair]]:
    pairs: list[Pair] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i in range(n):
                # New names on every step: the server keeps each name's key.
                caller = await make_phone(url, f"n{n}caller{i}", Path(tmp), audio)
                callee = await make_phone(url, f"n{n}callee{i}", Path(tmp), audio)
                pairs.append(Pair(caller, callee, f"n{n}callee{i}"))
            yield pairs
        finally:
            await asyncio.gather(
                *(p.close() for pair in pairs for p in (pair.caller, pair.callee)),
                return_exceptions=True,
            )


async def place(pair: Pair) -> None:
    call = await pair.caller.call(pair.callee_name)
    await call.wait_connected(timeout=30)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not (answered := [c for c in pair.callee.calls if c.call_id == call.call_id]):
        if loop.time() > deadline:
            raise TimeoutError(f"{pair.callee_name} never saw the call")
        await asyncio.sleep(0.01)
    await answered[0].wait_connected(timeout=30)
    pair.calls = [call, answered[0]]


async def hang_up(pair: Pair) -> None:
    if pair.calls:
        await pair.calls[0].hangup()
        for c in pair.calls:
            with contextlib.suppress(TimeoutError):
                await c.wait_ended(timeout=10)
    pair.calls = []


def _snapshot(pairs: list[Pair]) -> list[MediaStats]:
    out = []
    for pair in pairs:
        for c in pair.calls:
            stats = c.media_stats()
            if stats is None:
                raise RuntimeError(f"a call of {pair.callee_name} has no media")
            out.append(stats)
    return out


async def step(
    url: str, n: int, seconds: float, frames: list[bytes], rng: random.Random
) -> dict[str, Any]:
    sinks: list[MeteredSink] = []
    async with phones(url, n, audio_factory(frames, rng, sinks)) as pairs:
        began = time.monotonic()
        try:
            # Dial in small batches, as users would not all press at once.
            for start in range(0, n, 5):
                await asyncio.gather(*(place(p) for p in pairs[start : start + 5]))
            set_up = time.monotonic() - began
            await asyncio.sleep(WARMUP_S)
            clock = MediaClock.for_loop()
            before = _snapshot(pairs)
            lowest = clock.complexity
            cpu0, th0, t0 = time.process_time(), time.thread_time(), time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                await asyncio.sleep(min(0.1, seconds - elapsed))
                lowest = min(lowest, clock.complexity)
            wall = time.monotonic() - t0
            cpu = (time.process_time() - cpu0) / wall
            loop_cpu = (time.thread_time() - th0) / wall
            after = _snapshot(pairs)
            final_complexity = clock.complexity
        finally:
            await asyncio.gather(*(hang_up(p) for p in pairs), return_exceptions=True)

    def count(field_of: Callable[[MediaStats], int]) -> int:
        return sum(field_of(a) - field_of(b) for a, b in zip(after, before, strict=True))

    def glitches(s: MediaStats) -> int:
        p = s.playout
        dropped = s.jitter.dropped if s.jitter else 0
        return p.concealed + p.silenced + p.waited + p.fec_recovered + p.ticks_skipped + dropped

    per_receiver = wall / FRAME_SECONDS  # frames each receiver should play
    due = len(after) * per_receiver
    concealed = count(lambda s: s.playout.concealed + s.playout.silenced + s.playout.waited)
    fec = count(lambda s: s.playout.fec_recovered)
    playout_skips = count(lambda s: s.playout.ticks_skipped)
    dropped = count(lambda s: s.jitter.dropped if s.jitter else 0)
    sender_skips = count(lambda s: s.sender_ticks_skipped)
    underruns = count(lambda s: s.jitter.underruns if s.jitter else 0)
    played = count(lambda s: s.playout.played)
    glitched = count(glitches)
    worst = max(glitches(a) - glitches(b) for a, b in zip(after, before, strict=True))
    return {
        "calls": n,
        "phones": 2 * n,
        "set_up_seconds": round(set_up, 2),
        "window_seconds": round(wall, 2),
        "frames_due": int(due),
        "frames_played": played,
        "concealed": concealed,
        "fec_recovered": fec,
        "playout_skips": playout_skips,
        "dropped_to_shrink": dropped,
        "sender_skips": sender_skips,
        "underruns": underruns,
        "glitch_fraction": glitched / due,
        "worst_receiver_glitch_fraction": worst / per_receiver,
        "complexity_lowest": lowest,
        "complexity_end": final_complexity,
        "cpu": round(cpu, 3),
        "loop_thread_cpu": round(loop_cpu, 3),
        "load_average": os.getloadavg()[0],
        "realtime": glitched / due <= REALTIME_LIMIT and worst / per_receiver <= WORST_LIMIT,
    }


async def ramp(url: str, steps: list[int], seconds: float, seed: int) -> dict[str, Any]:
    frames = await speech_frames()
    rng = random.Random(seed)
    runs, best = [], 0
    for n in steps:
        result = await step(url, n, seconds, frames, rng)
        runs.append(result)
        shown = {k: v for k, v in result.items() if k not in ("calls", "realtime")}
        state = "real-time" if result["realtime"] else "NOT real-time"
        print(f"  {n} calls: {state} {shown}", flush=True)
        if not result["realtime"]:
            break
        best = n
        await asyncio.sleep(1.0)
    return {"max_realtime_calls": best, "runs": runs}


def table(res: dict[str, Any]) -> str:
    lines = [
        "| calls | glitched | worst call | sender skips | complexity lowest/end | CPU | loop CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['calls']} | {100 * r['glitch_fraction']:.2f} % | "
            f"{100 * r['worst_receiver_glitch_fraction']:.2f} % | {r['sender_skips']} | "
            f"{r['complexity_lowest']}/{r['complexity_end']} | "
            f"{100 * r['cpu']:.0f} % | {100 * r['loop_thread_cpu']:.0f} % |"
        )
    lines.append(f"\nreal-time: {res['max_realtime_calls']} calls ({res['criterion']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="20,25,30,35", help="ramp steps, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per step")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    steps = [int(x) for x in args.calls.split(",")]
    began = time.monotonic()
    port = free_port()
    with signaling_server(port):
        res = asyncio.run(ramp(f"ws://127.0.0.1:{port}", steps, args.seconds, args.seed))
    res.update(
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
        libopus=library_version(),
        frame_bytes=FRAME_BYTES,
        criterion=f"glitched <= {100 * REALTIME_LIMIT:g} % of all frames due and "
        f"<= {100 * WORST_LIMIT:g} % of any one receiver's",
        benchmark_seconds=time.monotonic() - began,
    )
    write_results(args.out, res)
    print()
    print(table(res))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
