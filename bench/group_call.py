"""Issue 14 benchmark: a group call through Janus next to a full mesh of our 1:1 calls.

For each size N (3, 5 and 8 by default), in one run:

* **group**: an embedded signaling server and a private Janus (VideoRoom, ``require_e2ee``), as
  ``voice demo --group N`` assembles them (voice/group/demo.py): the first member creates the
  group and invites the others one epoch at a time; every member publishes one feed and
  subscribes to the N-1 others (SFrame, signed frames, Janus forwarding).
* **mesh**: every pair of the N users in a 1:1 call of ours (``Phone``: sealed signaling through
  the same embedded server, ICE on loopback, SRTP keyed end to end). A Phone holds one active
  call (a second dial raises AlreadyInCall, voice/call/routing.py), so each user runs N-1 phones,
  one per peer, each with its own identity: N(N-1)/2 calls, N(N-1) phones.

All N members (or N(N-1) phones) live in this one process, next to the embedded signaling
server: that is what this 2-core machine can do, and it means the process's CPU is shared by
every participant. Janus runs in its own process; its CPU is read from /proc/<pid>/stat.

What each user says is a microphone paced at one 20 ms frame per 20 ms on its own clock phase,
silent but for a 12 ms tone burst every 300 ms (bench/marks.py; the bursts cycle through five
frequencies so a burst cannot be taken for one sent 1.5 s earlier). A mesh user's N-1 phones
share one microphone schedule (one mouth; each call encodes it again, as a mesh client must).
Mouth-to-ear, per (speaker, listener): from the time the speaker's frame holding a burst was due
(handed to the sender; a frame read late still counts from when it was due) to the time the
listener's sink got the frame holding it, each plus the burst's offset inside its frame, all on
this process's one monotonic clock. So codec delay is included, a device's capture and output
buffers are not (hand-off to hand-off, as bench/marks.py measures for the other benches). The
microphone hands a reader that falls behind a frame at most MAX_BACKLOG_FRAMES (3) behind the
newest, as PyAudioMicrophone does (older ones are skipped: before that rule, every tick the 1:1
sender skipped left one more frame waiting for good, up to 500 ms, found by this benchmark);
how long frames waited there is reported (``mic_behind_ms``), and mouth-to-ear is also given
from the moment a frame left that queue (``m2e_from_handoff_ms``).

The listeners differ, and that is part of the comparison: a mesh listener's sink is its call's
playout (jitter buffer, PLC, the playout clock), a group listener's sink is the decoder's output
on arrival (the group path has no jitter buffer yet: docs/group-media.md).

Measured over a window of ``--seconds`` after a warm-up: mouth-to-ear median and p95 over every
burst of every (speaker, listener) stream, bursts lost, frames lost (group: frames a member sent
that a listener never decoded; mesh: the jitter buffers' lost slots) and concealed (mesh only:
PLC, comfort noise, nothing to play, playout ticks skipped), CPU of this process per participant
(CPU seconds / wall seconds / N), Janus's per participant, the event loop's lateness, and whether
every member's group security code (every pair's SAS in the mesh) is equal.

    .venv/bin/python -m bench.group_call                          # 3, 5, 8; 10 s windows
    .venv/bin/python -m bench.group_call --sizes 3,5 --seconds 5

Prints a table and writes bench/results/group_call.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import math
import os
import platform
import random
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.marks import (
    MARK_FREQS,
    MARK_OFFSET,
    MARK_SAMPLES,
    SPACING_FRAMES,
    SentMark,
    mark_template,
    mouth_to_ear,
    percentile,
)
from bench.report import write_results
from signaling.config import Config
from signaling.server import serve_signaling
from voice.audio.base import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    FRAME_SECONDS,
    SAMPLE_RATE,
    array_to_pcm,
    check_frame,
)
from voice.audio.devices import MAX_BACKLOG_FRAMES
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.group.janusd import run_janus
from voice.group.session import GroupCall
from voice.media.clock import MediaClock
from voice.media.opus import library_version
from voice.media.stats import MediaStats
from voice.net.client import SignalingClient
from voice.phone import Call, Phone, PhoneConfig

RESULTS = Path(__file__).resolve().parent / "results" / "group_call.json"
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
WARMUP_S = 2.0  # talking before the window opens (jitter buffers settle, keys are in)
TAIL_S = 0.6  # bursts sent this close to the window's end are not counted (still on the way)
STEP_S = 30.0  # at most per group join, per call set-up, for the first frames
DIAL_BATCH = 5  # mesh calls dialled at once
MIC_QUEUE = 25  # frames a microphone queues for a late reader (PyAudioMicrophone's default)
ONE_PROCESS = (
    "every participant runs in this one Python process (one event loop, with the embedded "
    "signaling server): what this 2-core machine can do; Janus is its own process"
)

Clock = Callable[[], float]


# ---- sources and sinks -------------------------------------------------------------------


class Mouth:
    """One user's microphone schedule: frame k is due at ``origin + k * 20 ms``; frames
    ``k % SPACING_FRAMES == SPACING_FRAMES // 2`` hold a burst (frequency cycling per burst)."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.templates = [array_to_pcm(self._frame(f)) for f in MARK_FREQS]

    @staticmethod
    def _frame(freq: float) -> np.ndarray[Any, np.dtype[np.float64]]:
        frame = np.zeros(FRAME_SAMPLES)
        frame[MARK_OFFSET : MARK_OFFSET + MARK_SAMPLES] = mark_template(freq)
        return frame

    def due(self, k: int) -> float:
        return self.origin + k * FRAME_SECONDS


class MarkMic:
    """A source reading one :class:`Mouth` like a microphone (voice.audio.devices): a reader
    that comes early waits for the frame's due time, one that comes late gets a queued frame at
    once, never more than MAX_BACKLOG_FRAMES behind the newest (older ones are skipped).
    Keeps every burst handed over (:class:`~bench.marks.SentMark`, timed from its due time)
    and how far behind the reader was at each read (``backlog``: (time, seconds))."""

    def __init__(self, mouth: Mouth, clock: Clock) -> None:
        self.mouth = mouth
        self.clock = clock
        self.k: int | None = None
        self.marks: list[SentMark] = []
        self.handed: list[SentMark] = []  # the same bursts, timed from when read_frame returned
        self.backlog: list[tuple[float, float]] = []
        self.dropped = 0  # frames the queue dropped: the reader was MIC_QUEUE frames behind

    async def read_frame(self) -> bytes | None:
        now = self.clock()
        if self.k is None:
            self.k = max(0, math.ceil((now - self.mouth.origin) / FRAME_SECONDS))
        newest = math.floor((now - self.mouth.origin) / FRAME_SECONDS)
        # what PyAudioMicrophone.read_frame hands a late reader: at most MIC_QUEUE frames are
        # kept, and of those the one MAX_BACKLOG_FRAMES behind the newest (take_fresh)
        oldest = newest - min(MIC_QUEUE, MAX_BACKLOG_FRAMES) + 1
        if self.k < oldest:
            self.dropped += oldest - self.k
            self.k = oldest
        k, due = self.k, self.mouth.due(self.k)
        self.k += 1
        if due > now:
            await asyncio.sleep(due - now)
        self.backlog.append((now, max(0.0, now - due)))
        if k % SPACING_FRAMES != SPACING_FRAMES // 2:
            return bytes(FRAME_BYTES)
        freq = (k // SPACING_FRAMES) % len(MARK_FREQS)
        at = due + MARK_OFFSET / SAMPLE_RATE
        index = k * FRAME_SAMPLES + MARK_OFFSET
        self.marks.append(SentMark(index, freq, at))
        self.handed.append(SentMark(index, freq, self.clock() + MARK_OFFSET / SAMPLE_RATE))
        return self.mouth.templates[freq]

    def behind(self, t0: float, t1: float) -> list[float]:
        """How far behind its due time each frame read in [t0, t1] was, in seconds."""
        return [b for t, b in self.backlog if t0 <= t <= t1]

    async def close(self) -> None:
        return None


class Ear:
    """A sink that counts every frame and keeps frames and arrival times while ``armed``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.armed = False
        self.frames_total = 0
        self.frames: list[bytes] = []
        self.times: list[float] = []

    async def write_frame(self, pcm: bytes) -> None:
        check_frame(pcm)
        self.frames_total += 1
        if self.armed:
            self.frames.append(bytes(pcm))
            self.times.append(self.clock())

    def delays(self, marks: list[SentMark], t0: float, t1: float) -> tuple[list[float], int]:
        """Mouth-to-ear of the bursts sent in [t0, t1 - TAIL_S], and how many were sent."""
        sent = [m for m in marks if t0 <= m.time <= t1 - TAIL_S]
        got = np.frombuffer(b"".join(self.frames), dtype="<i2").astype(np.float64)
        return mouth_to_ear(sent, got, self.times), len(sent)

    async def close(self) -> None:
        return None


# ---- measuring ---------------------------------------------------------------------------


def janus_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoopLag:
    """How late the event loop runs a 50 ms timer, sampled while ``running``."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.running = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.05)
            if self.running:
                self.samples.append(loop.time() - t - 0.05)


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[LoopLag]:
    lag = LoopLag()
    task = asyncio.create_task(lag.run())
    try:
        yield lag
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Window:
    """What every mode measures the same way over its window."""

    n: int
    janus_pid: int | None = None
    t0: float = 0.0
    t1: float = 0.0
    cpu0: float = 0.0
    cpu: float = 0.0
    thread0: float = 0.0
    thread: float = 0.0
    janus0: float = 0.0
    janus: float | None = None
    lag: LoopLag = field(default_factory=LoopLag)

    def open(self, clock: Clock) -> None:
        self.lag.running = True
        self.cpu0, self.thread0, self.t0 = time.process_time(), time.thread_time(), clock()
        if self.janus_pid is not None:
            self.janus0 = janus_cpu_seconds(self.janus_pid)

    def close(self, clock: Clock) -> None:
        self.t1 = clock()
        self.cpu = time.process_time() - self.cpu0
        self.thread = time.thread_time() - self.thread0
        if self.janus_pid is not None:
            self.janus = janus_cpu_seconds(self.janus_pid) - self.janus0
        self.lag.running = False

    def report(self) -> dict[str, Any]:
        wall = self.t1 - self.t0
        lag_ms = [1000 * s for s in self.lag.samples]
        out: dict[str, Any] = {
            "window_seconds": round(wall, 2),
            "cpu_process": round(self.cpu / wall, 3),
            "cpu_per_participant": round(self.cpu / wall / self.n, 4),
            "loop_thread_cpu": round(self.thread / wall, 3),
            "loop_late_ms": {
                "p50": _r(percentile(lag_ms, 50)),
                "p95": _r(percentile(lag_ms, 95)),
                "max": _r(max(lag_ms, default=None)),
            },
            "load_average": os.getloadavg()[0],
        }
        if self.janus is not None:
            out["janus_cpu"] = round(self.janus / wall, 3)
            out["janus_cpu_per_participant"] = round(self.janus / wall / self.n, 4)
        return out


def _r(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def m2e_report(
    streams: dict[tuple[str, str], tuple[MarkMic, Ear]], t0: float, t1: float
) -> dict[str, Any]:
    """Mouth-to-ear over every (speaker, listener) stream, and per stream."""
    every: list[float] = []
    handed: list[float] = []
    per_stream, sent_total = [], 0
    for (speaker, listener), (mic, ear) in sorted(streams.items()):
        delays, sent = ear.delays(mic.marks, t0, t1)
        ms = [1000 * d for d in delays]
        every += ms
        handed += [1000 * d for d in ear.delays(mic.handed, t0, t1)[0]]
        sent_total += sent
        per_stream.append(
            {
                "speaker": speaker,
                "listener": listener,
                "median_ms": _r(percentile(ms, 50)),
                "p95_ms": _r(percentile(ms, 95)),
                "bursts_sent": sent,
                "bursts_found": len(ms),
            }
        )
    behind = [1000 * b for mic, _ear in streams.values() for b in mic.behind(t0, t1)]
    return {
        "mic_behind_ms": {
            "median": _r(percentile(behind, 50)),
            "p95": _r(percentile(behind, 95)),
            "max": _r(max(behind, default=None)),
        },
        "mic_frames_dropped": sum(
            {id(mic): mic.dropped for mic, _ear in streams.values()}.values()
        ),
        "m2e_ms": {
            "median": _r(percentile(every, 50)),
            "p95": _r(percentile(every, 95)),
            "min": _r(min(every, default=None)),
            "max": _r(max(every, default=None)),
            "n": len(every),
        },
        "m2e_from_handoff_ms": {
            "median": _r(percentile(handed, 50)),
            "p95": _r(percentile(handed, 95)),
        },
        "bursts_sent": sent_total,
        "bursts_missing": sent_total - len(every),
        "per_stream": per_stream,
    }


# ---- the group call ----------------------------------------------------------------------


class Member:
    """One group member: identity, contacts, signaling session, call, its mouth and ears."""

    def __init__(self, name: str, root: Path, mouth: Mouth, clock: Clock) -> None:
        self.name = name
        self.identity = Identity.load_or_create(root / name / "identity.key")
        self.contacts = ContactBook(root / name / "contacts.json")
        self.mouth = mouth
        self.clock = clock
        self.ears: dict[str, Ear] = {}  # by speaker
        self.mic: MarkMic | None = None
        self.client: SignalingClient | None = None
        self.call: GroupCall | None = None

    def sink_for(self, speaker: str) -> Ear:
        return self.ears.setdefault(speaker, Ear(self.clock))

    async def connect(self, url: str) -> SignalingClient:
        self.client = await SignalingClient.connect(
            url, self.name, self.identity.public_key, self.identity.sign
        )
        return self.client

    async def close(self) -> None:
        if self.call is not None:
            await self.call.close()
        if self.client is not None:
            await self.client.close()


def _settled(epoch: int) -> Callable[[GroupCall], bool]:
    return lambda call: call.epoch == epoch and call.code is not None


def _at_least(epoch: int) -> Callable[[GroupCall], bool]:
    return lambda call: call.epoch >= epoch


def _hears(others: list[str]) -> Callable[[GroupCall], bool]:
    return lambda call: all(call.hearing.frames[n] > 10 for n in others)


def _call(m: Member) -> GroupCall:
    assert m.call is not None
    return m.call


async def assemble(members: list[Member], url: str, janus_url: str) -> None:
    """As the demo: the first creates the group and invites the others one epoch at a time."""
    creator, *others = members
    creator.call = await GroupCall.create(
        await creator.connect(url),
        creator.identity,
        creator.contacts,
        janus_url,
        sink_for=creator.sink_for,
    )
    for i, member in enumerate(others, start=1):
        member.call = GroupCall.listen(
            await member.connect(url),
            member.identity,
            member.contacts,
            auto_accept=True,
            sink_for=member.sink_for,
        )
        await member.call.control.peer_key(creator.name)
        epoch = creator.call.epoch + 1
        await creator.call.invite(member.name)
        async with asyncio.timeout(STEP_S):
            await creator.call.until(_at_least(epoch))
            for m in members[: i + 1]:
                await _call(m).until(_settled(epoch))


async def group_run(n: int, url: str, seconds: float, rng: random.Random) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = loop.time
    spacing = SPACING_FRAMES * FRAME_SECONDS
    result: dict[str, Any] = {
        "mode": "group",
        "participants": n,
        "streams": n * (n - 1),
        "connections": f"{n} publisher + {n * (n - 1)} subscriber PeerConnections to Janus",
    }
    with tempfile.TemporaryDirectory(prefix="bench-group-") as tmp:
        root = Path(tmp)
        base = clock()
        members = [
            Member(f"g{n}-{name}", root, Mouth(base + rng.uniform(0, spacing)), clock)
            for name in NAMES[:n]
        ]
        async with run_janus(root / "janus") as janus, loop_lag() as lag:
            window = Window(n, janus.pid, lag=lag)
            try:
                began = clock()
                await assemble(members, url, janus.url)
                names = [m.name for m in members]
                async with asyncio.timeout(STEP_S):
                    for m in members:
                        await _call(m).until(_hears([x for x in names if x != m.name]))
                result["set_up_seconds"] = round(clock() - began, 2)
                for m in members:
                    m.mic = MarkMic(m.mouth, clock)
                    _call(m).play(m.mic)
                await asyncio.sleep(WARMUP_S)
                before = _group_counts(members)
                for m in members:
                    for ear in m.ears.values():
                        ear.armed = True
                window.open(clock)
                await asyncio.sleep(seconds)
                window.close(clock)
                for m in members:
                    for ear in m.ears.values():
                        ear.armed = False
                after = _group_counts(members)
            except Exception as exc:  # reported in the row, the run goes on
                result["error"] = f"{type(exc).__name__}: {exc}"
                return result
            finally:
                for m in members:
                    with contextlib.suppress(Exception):
                        await m.close()
    streams = {
        (speaker.name, listener.name): (speaker.mic, listener.ears[speaker.name])
        for speaker in members
        for listener in members
        if speaker is not listener and speaker.mic is not None
    }
    codes = {str(m.call.code) if m.call and m.call.code else None for m in members}
    sent = {k: v - before["sent"][k] for k, v in after["sent"].items()}
    heard = {k: v - before["heard"][k] for k, v in after["heard"].items()}
    lost = sum(max(0, sent[s] - got) for (s, _listener), got in heard.items())
    due = sum(sent[s] for (s, _listener) in heard)
    result.update(window.report())
    result.update(m2e_report(streams, window.t0, window.t1))
    result.update(
        frames_sent_to_listeners=due,
        frames_lost=lost,
        frames_lost_fraction=lost / due if due else None,
        concealed=None,  # no jitter buffer or PLC on the group path yet
        refused=dict(after["dropped"] - before["dropped"]),
        epoch=_call(members[0]).epoch,
        codes_equal=None not in codes and len(codes) == 1,
    )
    return result


def _group_counts(members: list[Member]) -> dict[str, Counter[Any]]:
    sent: Counter[Any] = Counter()
    heard: Counter[Any] = Counter()
    dropped: Counter[Any] = Counter()
    for m in members:
        call = _call(m)
        sent[m.name] = call.stream.sent if call.stream else 0
        for o in members:
            if o is not m:
                heard[(o.name, m.name)] = call.hearing.frames[o.name]
        for reason in ("forged", "bad_sframe", "replay", "no_member", "bad_opus"):
            dropped[reason] += call.dropped.get(reason, 0)
    return {"sent": sent, "heard": heard, "dropped": dropped}


# ---- the mesh of 1:1 calls ---------------------------------------------------------------


@dataclass
class Link:
    """One 1:1 call of the mesh: user a's phone and user b's phone (a < b)."""

    a: int
    b: int
    phone_a: Phone
    phone_b: Phone
    name_b: str
    calls: list[Call] = field(default_factory=list)


async def _phone(url: str, user: str, home: Path, audio: Callable[[Call], Any]) -> Phone:
    folder = home / user
    folder.mkdir(mode=0o700)
    config = PhoneConfig(
        server_url=url,
        user=user,
        identity=Identity.load_or_create(folder / "identity.key"),
        contacts=ContactBook(folder / "contacts.json"),
        relay="never",  # loopback, no TURN: as voice demo
    )
    return await Phone.connect(config, audio=audio, auto_answer=True)


async def _place(link: Link) -> None:
    call = await link.phone_a.call(link.name_b)
    await call.wait_connected(timeout=STEP_S)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_S
    while not (answered := [c for c in link.phone_b.calls if c.call_id == call.call_id]):
        if loop.time() > deadline:
            raise TimeoutError(f"{link.name_b} never saw the call")
        await asyncio.sleep(0.01)
    await answered[0].wait_connected(timeout=STEP_S)
    link.calls = [call, answered[0]]


async def _hang_up(link: Link) -> None:
    if link.calls:
        await link.calls[0].hangup()
        for c in link.calls:
            with contextlib.suppress(TimeoutError):
                await c.wait_ended(timeout=10)


def _stats(links: list[Link]) -> list[MediaStats]:
    out = []
    for link in links:
        for c in link.calls:
            stats = c.media_stats()
            if stats is None:
                raise RuntimeError(f"a call of {link.name_b} has no media")
            out.append(stats)
    return out


async def mesh_run(n: int, url: str, seconds: float, rng: random.Random) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = loop.time
    spacing = SPACING_FRAMES * FRAME_SECONDS
    names = [f"m{n}-{name}" for name in NAMES[:n]]
    base = clock()
    mouths = [Mouth(base + rng.uniform(0, spacing)) for _ in range(n)]
    mics: dict[tuple[int, int], MarkMic] = {}  # (speaker, listener)
    ears: dict[tuple[int, int], Ear] = {}

    def audio(me: int, peer: int) -> Callable[[Call], tuple[MarkMic, Ear]]:
        def make(_call: Call) -> tuple[MarkMic, Ear]:
            mics[(me, peer)] = MarkMic(mouths[me], clock)
            ears[(peer, me)] = Ear(clock)
            return mics[(me, peer)], ears[(peer, me)]

        return make

    pairs = list(itertools.combinations(range(n), 2))
    result: dict[str, Any] = {
        "mode": "mesh",
        "participants": n,
        "streams": n * (n - 1),
        "connections": f"{len(pairs)} calls, {n - 1} phones per user ({n * (n - 1)} phones)",
    }
    links: list[Link] = []
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp:
        home = Path(tmp)
        async with loop_lag() as lag:
            window = Window(n, lag=lag)
            media_clock = MediaClock.for_loop()
            try:
                began = clock()
                for a, b in pairs:
                    name_b = f"{names[b]}-{a}"
                    phone_a = await _phone(url, f"{names[a]}-{b}", home, audio(a, b))
                    phone_b = await _phone(url, name_b, home, audio(b, a))
                    links.append(Link(a, b, phone_a, phone_b, name_b))
                for start in range(0, len(links), DIAL_BATCH):
                    await asyncio.gather(*(_place(k) for k in links[start : start + DIAL_BATCH]))
                result["set_up_seconds"] = round(clock() - began, 2)
                await asyncio.sleep(WARMUP_S)
                before = _stats(links)
                lowest = media_clock.complexity
                for ear in ears.values():
                    ear.armed = True
                window.open(clock)
                while (left := window.t0 + seconds - clock()) > 0:
                    await asyncio.sleep(min(0.1, left))
                    lowest = min(lowest, media_clock.complexity)
                window.close(clock)
                for ear in ears.values():
                    ear.armed = False
                after = _stats(links)
                complexity = (lowest, media_clock.complexity)
                sas_equal = all(
                    k.calls[0].sas is not None and k.calls[0].sas == k.calls[1].sas for k in links
                )
            except Exception as exc:  # reported in the row, the run goes on
                result["error"] = f"{type(exc).__name__}: {exc}"
                result["calls_connected"] = sum(1 for k in links if k.calls)
                return result
            finally:
                await asyncio.gather(*(_hang_up(k) for k in links), return_exceptions=True)
                await asyncio.gather(
                    *(p.close() for k in links for p in (k.phone_a, k.phone_b)),
                    return_exceptions=True,
                )

    def count(of: Callable[[MediaStats], int]) -> int:
        return sum(of(x) - of(y) for x, y in zip(after, before, strict=True))

    streams = {(names[s], names[r]): (mic, ears[(s, r)]) for (s, r), mic in mics.items()}
    due = round(len(after) * window.report()["window_seconds"] / FRAME_SECONDS)
    result.update(window.report())
    result.update(m2e_report(streams, window.t0, window.t1))
    result.update(
        frames_due=due,
        frames_lost=count(lambda s: s.jitter.lost if s.jitter else 0),
        frames_lost_fraction=count(lambda s: s.jitter.lost if s.jitter else 0) / due,
        concealed=count(lambda s: s.playout.concealed + s.playout.silenced + s.playout.waited),
        fec_recovered=count(lambda s: s.playout.fec_recovered),
        playout_ticks_skipped=count(lambda s: s.playout.ticks_skipped),
        dropped_to_shrink=count(lambda s: s.jitter.dropped if s.jitter else 0),
        sender_ticks_skipped=count(lambda s: s.sender_ticks_skipped),
        complexity_lowest_end=list(complexity),
        sas_equal=sas_equal,
    )
    return result


# ---- the run -----------------------------------------------------------------------------


def _server_config() -> Config:
    """The embedded server, with the per-address limits opened: every phone comes from
    127.0.0.1 (a deployment sees them from many addresses)."""
    return Config(
        port=0,
        http_port=0,
        db=":memory:",
        log_level="WARNING",
        rate=200.0,
        burst=400,
        max_connections_per_ip=1000,
        registration_ip_burst=1000,
        registrations_per_ip_per_hour=100_000,
        registration_burst=1000,
        registrations_per_hour=100_000,
    )


async def run(sizes: list[int], seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    runs: list[dict[str, Any]] = []
    async with serve_signaling(_server_config()) as server:
        url = f"ws://127.0.0.1:{server.port}"
        for n in sizes:
            for mode, go in (("group", group_run), ("mesh", mesh_run)):
                print(f"  {mode} of {n}...", flush=True)
                try:
                    row = await go(n, url, seconds, rng)
                except Exception as exc:  # e.g. Janus did not start: the row says so
                    row = {"mode": mode, "participants": n, "streams": n * (n - 1)}
                    row["error"] = f"{type(exc).__name__}: {exc}"
                runs.append(row)
                shown = {k: v for k, v in row.items() if k not in ("per_stream",)}
                print(f"    {shown}", flush=True)
                gc.collect()
                await asyncio.sleep(1.0)
    return {"runs": runs}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _notes(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED: {r['error']}"
    notes = [r["connections"]]
    if r["bursts_missing"] > 0.05 * r["bursts_sent"]:
        notes.append(
            "UNRELIABLE mouth-to-ear: many bursts lost or later than the 1.4 s a burst can be "
            "matched in (one frequency repeats every 1.5 s)"
        )
    if r["mode"] == "group":
        notes.append(f"codes equal: {'yes' if r['codes_equal'] else 'NO'} (epoch {r['epoch']})")
    else:
        notes.append(f"SAS equal: {'yes' if r['sas_equal'] else 'NO'}")
        low, end = r["complexity_lowest_end"]
        notes.append(f"Opus complexity {low}/{end}")
        notes.append(f"sender ticks skipped {r['sender_ticks_skipped']}")
    handed = r["m2e_from_handoff_ms"]
    notes.append(
        f"mic read behind median {r['mic_behind_ms']['median']} ms, "
        f"from hand-off {handed['median']} / {handed['p95']} ms"
    )
    notes.append(f"loop late p95 {r['loop_late_ms']['p95']} ms")
    notes.append(f"process CPU {_pct(r['cpu_process'])} (loop thread {_pct(r['loop_thread_cpu'])})")
    return "; ".join(notes)


def table(res: dict[str, Any]) -> str:
    lines = [
        "| mode | participants | streams | mouth-to-ear median / p95 | CPU per participant "
        "(this process) | Janus CPU per participant | bursts missing | frames lost / "
        "concealed | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["runs"]:
        if "error" in r:
            lines.append(
                f"| {r['mode']} | {r['participants']} | {r['streams']} | | | | | | {_notes(r)} |"
            )
            continue
        m2e = r["m2e_ms"]
        janus = _pct(r.get("janus_cpu_per_participant")) if r["mode"] == "group" else "-"
        concealed = "n/a" if r["concealed"] is None else str(r["concealed"])
        lines.append(
            f"| {r['mode']} | {r['participants']} | {r['streams']} | "
            f"{m2e['median']} / {m2e['p95']} ms | {_pct(r['cpu_per_participant'])} | {janus} | "
            f"{r['bursts_missing']} of {r['bursts_sent']} | {r['frames_lost']} / {concealed} | "
            f"{_notes(r)} |"
        )
    lines.append(f"\n{res['one_process']}.")
    lines.append(res["listeners"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="3,5,8", help="participants, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = list(dict.fromkeys(int(x) for x in args.sizes.split(",")))  # names are per size
    began = time.monotonic()
    res = asyncio.run(run(sizes, args.seconds, args.seed))
    res.update(
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
        libopus=library_version(),
        seconds=args.seconds,
        warmup_seconds=WARMUP_S,
        burst_every_ms=round(1000 * SPACING_FRAMES * FRAME_SECONDS),
        one_process=ONE_PROCESS,
        listeners="Mesh listeners hear their call's playout (jitter buffer, PLC); group "
        "listeners hear the decoder on arrival (no jitter buffer on the group path yet). "
        "Mouth-to-ear is from a frame's due time at the microphone to the sink (no device "
        "buffers); 'mic read behind' is how long frames waited in the microphone's queue "
        "(at most 3 frames behind the newest) for the sender; 'from hand-off' leaves that wait "
        "out. "
        "CPU is % of one core.",
        benchmark_seconds=round(time.monotonic() - began, 1),
    )
    write_results(args.out, res)
    print()
    print(table(res))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
