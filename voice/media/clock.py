"""One 20 ms media clock per event loop, and the codec worker that encodes a tick's frames.

Why (docs/media.md, "Scaling"): with a timer per sender every call added its own wake-ups, and
Opus encoding (about 0.9 ms per frame at complexity 9) ran on the event loop thread, so ten
two-way calls used a whole core and timer jitter broke the audio. Here

* every sender of the process waits on the same tick grid (``origin + n * 20 ms``, absolute
  deadlines from ``loop.time()``): one timer wake-up per tick whatever the number of calls. A tick
  that fires a frame or more late skips ahead (the waiters see the jump in ``index`` and advance
  their RTP timestamps), it never bursts;
* the frames go to a queue that the codec worker thread(s) drain in chunks of at most
  ``chunk`` frames, each one foreign call (:func:`~voice.media.opus.encode_many`); a running
  worker takes what was queued meanwhile without another executor job, so the busier the loop,
  the fewer GIL hand-overs per frame. The GIL is released while libopus encodes, so on two
  cores the encoding runs beside the event loop;
* a :class:`~voice.media.overuse.ComplexityGovernor` sees each tick's encode time and lateness
  and lowers (later raises again) the complexity of every encoder.

The grid is anchored when the first member joins and forgotten when the last one leaves, so an
idle process keeps no timer and the next call starts at once. :meth:`MediaClock.for_loop` gives
the running loop's shared clock; tests can build their own (``executor=None`` encodes inline on
the loop thread, which is deterministic).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Final

from voice.audio.base import FRAME_SECONDS
from voice.errors import CodecError
from voice.media.opus import OpusEncoder, encode_many
from voice.media.overuse import COST_RATIO, ComplexityGovernor, GovernorState

CHUNK: Final = 16  # at most this many frames per foreign call (and per delivery to the loop)
# A worker holds the locks of a call's encoders for the whole call, and the loop thread takes
# one to retune or close an encoder (each RTCP report, a hang-up): a call encodes at most
# about this long at the current complexity, so the loop never waits longer.
STALL_BUDGET: Final = 0.004
FRAME_COST_AT_9: Final = 0.0009  # seconds to encode a frame at complexity 9 (docs/media.md)
INLINE: Final = None  # executor=INLINE: encode on the loop thread (tests, one-core machines)

_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = (
    weakref.WeakKeyDictionary()
)
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()

Job = tuple[OpusEncoder, bytes, "asyncio.Future[bytes]"]
EncodeResult = tuple[list[bytes | CodecError], float]
Done = tuple[list["asyncio.Future[bytes]"], EncodeResult | Exception]


def codec_workers() -> int:
    """Worker threads for encoding: one core is the event loop's, the others encode (1..4)."""
    override = os.environ.get("VOICE_CODEC_WORKERS")
    if override:
        return max(1, min(8, int(override)))
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def shared_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process's codec worker pool (threads are per process, not per loop)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=codec_workers(), thread_name_prefix="opus-encode"
            )
        return _executor


def frames_within(seconds: float, complexity: int) -> int:
    """How many frames one foreign call may encode at ``complexity`` in about ``seconds``."""
    cost = FRAME_COST_AT_9 * COST_RATIO.get(complexity, 1.0)
    return max(1, int(seconds / cost))


def encode_chunk(jobs: list[tuple[OpusEncoder, bytes]], complexity: int) -> EncodeResult:
    """Runs in a worker: encode each frame at ``min(its setting, complexity)``; time the work.

    One :func:`~voice.media.opus.encode_many` call (one foreign call with the batch helper). A
    failing encoder (closed by a hang-up meanwhile) yields its error, not the whole chunk's.
    """
    out: list[bytes | CodecError | None] = [None] * len(jobs)
    todo: list[int] = []
    for i, (encoder, _) in enumerate(jobs):
        try:
            encoder.set_complexity(min(encoder.settings.complexity, complexity))
            todo.append(i)
        except CodecError as exc:
            out[i] = exc
    payloads, busy = encode_many([jobs[i] for i in todo])
    for i, payload in zip(todo, payloads, strict=True):
        out[i] = payload
    return [p if p is not None else CodecError("not encoded") for p in out], busy


class MediaClock:
    """The shared tick grid and batched encoder of one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        period: float = FRAME_SECONDS,
        executor: concurrent.futures.Executor | None = INLINE,
        workers: int = 1,
        chunk: int = CHUNK,
        governor: ComplexityGovernor | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self._time = clock or loop.time
        self.period = period
        self._executor = executor
        self._chunk = max(1, chunk)
        self.governor = governor or ComplexityGovernor(period=period, workers=workers)
        self._members = 0
        self._origin: float | None = None
        self._next = 0  # index of the tick the timer is set for
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[tuple[int, float]]] = []
        self._jobs: list[Job] = []
        self._flush_pending = False
        self._level = self.governor.complexity  # the complexity the workers encode at now
        # Frames for the workers, and how many workers drain them; guarded by the lock.
        self._queue: list[Job] = []
        self._queue_lock = threading.Lock()
        self._encoding: set[OpusEncoder] = set()  # encoders a worker is encoding now
        self._running = 0
        self._workers = max(1, workers)
        # Chunks the workers finished, for the loop (``_post``); guarded by the lock.
        self._done: list[Done] = []
        self._done_lock = threading.Lock()
        self._drain_pending = False
        self._tick_frames = 0
        self._tick_busy = 0.0
        self.ticks = 0
        self.ticks_skipped = 0

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> MediaClock:
        """The shared clock of ``loop`` (the running loop by default), created on first use."""
        loop = loop or asyncio.get_running_loop()
        clock = _clocks.get(loop)
        if clock is None:
            workers = codec_workers()
            clock = cls(loop, executor=shared_executor(), workers=workers)
            _clocks[loop] = clock
        return clock

    @property
    def complexity(self) -> int:
        """The complexity the governor allows now (each encoder also caps it by its setting)."""
        return self.governor.complexity

    @property
    def governor_state(self) -> GovernorState:
        return self.governor.state

    @property
    def last_index(self) -> int:
        """The index of the newest tick fired (a new member waits for the one after it)."""
        return self._next - 1

    @property
    def members(self) -> int:
        return self._members

    # -- membership and ticks -------------------------------------------------------------------

    def join(self) -> tuple[int, float]:
        """A sender starts using the grid.

        Every member gets a tick right away, so no call waits up to 20 ms for its first packet:
        the first member anchors the grid at the current time and gets tick 0; a later member
        gets the newest tick already fired, so its first packet goes out now and its second on
        the grid's next tick (less than 20 ms later; RTP timestamps keep the 20 ms spacing, and
        a receiver's jitter buffer holds an early packet until its playout tick).
        """
        self._members += 1
        if self._origin is not None:
            index = self.last_index
            return index, self._origin + index * self.period
        self._origin = self._time()
        self._next = 1
        self._timer = self._loop.call_at(self._origin + self.period, self._fire)
        return 0, self._origin

    def leave(self) -> None:
        """A sender stops; with no member left the timer stops and the grid is forgotten."""
        self._members = max(0, self._members - 1)
        if self._members == 0:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._origin = None
            for fut in self._waiters:
                fut.cancel()
            self._waiters.clear()

    async def tick(self, last: int) -> tuple[int, float]:
        """The tick after ``last``: (its index on the grid, its deadline in loop time).

        Waits for it if it is still ahead. A member that is behind (its previous frame took
        long) gets it at once while it is less than a period overdue, else the newest tick due
        (it skips the ones in between, like a late timer would).
        """
        origin = self._origin
        if origin is None:
            raise RuntimeError("MediaClock.tick() without join()")
        index = last + 1
        overdue = self._time() - (origin + index * self.period)
        if overdue < 0:
            fut: asyncio.Future[tuple[int, float]] = self._loop.create_future()
            self._waiters.append(fut)
            return await fut
        index += int(overdue / self.period)
        return index, origin + index * self.period

    def _fire(self) -> None:
        self._timer = None
        if self._origin is None:
            return
        now = self._time()
        index = self._next
        late = now - (self._origin + index * self.period)
        if late >= self.period:
            behind = int(late / self.period)
            index += behind
            late -= behind * self.period
            self.ticks_skipped += behind
        deadline = self._origin + index * self.period
        self.ticks += 1
        self._observe(late)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result((index, deadline))
        self._next = index + 1
        self._timer = self._loop.call_at(self._origin + self._next * self.period, self._fire)

    def _observe(self, late: float) -> None:
        frames, busy = self._tick_frames, self._tick_busy
        self._tick_frames, self._tick_busy = 0, 0.0
        self.governor.observe(frames, busy, max(0.0, late))

    # -- encoding -------------------------------------------------------------------------------

    async def encode(self, encoder: OpusEncoder, pcm: bytes) -> bytes:
        """Encode one frame together with the others submitted in this loop iteration."""
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._jobs.append((encoder, pcm, fut))
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._flush_pending = False
        jobs = [job for job in self._jobs if not job[2].done()]  # skip cancelled waiters
        self._jobs = []
        self._level = self.governor.complexity
        if self._executor is None:
            for start in range(0, len(jobs), self._chunk):
                chunk = jobs[start : start + self._chunk]
                work = [(encoder, pcm) for encoder, pcm, _ in chunk]
                self._deliver([fut for _, _, fut in chunk], encode_chunk(work, self._level))
            return
        with self._queue_lock:
            self._queue.extend(jobs)
            start_worker = bool(jobs) and self._running < self._workers
            self._running += start_worker
        if start_worker:
            try:
                self._executor.submit(self._work)
            except BaseException:  # a shut-down executor: the slot was never taken
                with self._queue_lock:
                    self._running -= 1
                raise

    def _work(self) -> None:
        """A worker's job: encode what is queued, a chunk per foreign call, until none is left.

        Frames queued while a chunk encodes join the next chunk without another executor job,
        so the busier the loop, the larger the chunks and the fewer GIL hand-overs per frame.
        """
        chunk: list[Job] = []
        try:
            while True:
                with self._queue_lock:
                    chunk = self._take_chunk()
                    if not chunk:  # nothing left, or only encoders another worker has
                        return
                futures = [fut for _, _, fut in chunk]
                result: EncodeResult | Exception
                try:
                    result = encode_chunk([(e, pcm) for e, pcm, _ in chunk], self._level)
                except Exception as exc:  # delivered to every waiter of the chunk
                    result = exc
                self._post(futures, result)  # first: an encoder's results stay in order
                with self._queue_lock:
                    self._encoding.difference_update(encoder for encoder, _, _ in chunk)
                    chunk = []
        finally:  # however this worker ends, its slot and its encoders are free again
            with self._queue_lock:
                self._running -= 1
                self._encoding.difference_update(encoder for encoder, _, _ in chunk)

    def _take_chunk(self) -> list[Job]:
        """Up to ``chunk`` queued frames, oldest first, for one worker (the lock is held).

        An encoder's frames are encoded in the order they were queued: a frame whose encoder
        another worker is encoding now, or whose earlier frame stays queued, waits (the worker
        encoding it takes it next). A queue that outran the workers may hold several frames of
        one encoder; with two workers or more they must not race for its state.
        """
        chunk: list[Job] = []
        waiting: list[Job] = []
        held: set[OpusEncoder] = set()
        size = min(self._chunk, frames_within(STALL_BUDGET, self._level))
        for i, job in enumerate(self._queue):
            if len(chunk) >= size:  # full: the rest waits as it is
                waiting += self._queue[i:]
                break
            encoder = job[0]
            if encoder not in self._encoding and encoder not in held:
                chunk.append(job)
            else:
                waiting.append(job)
                held.add(encoder)
        self._queue = waiting
        self._encoding.update(encoder for encoder, _, _ in chunk)
        return chunk

    def _post(self, futures: list[asyncio.Future[bytes]], result: EncodeResult | Exception) -> None:
        """Hand a finished chunk to the loop (in the worker thread). Chunks that finish before
        the loop got to the ones before them join the same wake-up: one
        ``call_soon_threadsafe`` (a write to the loop's self-pipe, a wake-up from ``epoll``) for
        all of them, delivered in order."""
        with self._done_lock:
            self._done.append((futures, result))
            if self._drain_pending:
                return
            self._drain_pending = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
            self._drain_pending = False
        for futures, result in done:
            if isinstance(result, Exception):
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(result)
            else:
                self._deliver(futures, result)

    def _deliver(self, futures: list[asyncio.Future[bytes]], result: EncodeResult) -> None:
        payloads, busy = result
        self._tick_frames += len(payloads)
        self._tick_busy += busy
        for fut, payload in zip(futures, payloads, strict=True):
            if fut.done():
                continue
            if isinstance(payload, CodecError):
                fut.set_exception(payload)
            else:
                fut.set_result(payload)


def ticks_to_skip(previous: int | None, index: int) -> int:
    """How many grid ticks a member missed between its last tick ``previous`` and ``index``."""
    return 0 if previous is None else max(0, index - previous - 1)
