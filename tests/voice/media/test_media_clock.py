"""voice.media.clock and voice.media.overuse: the shared tick grid, batched encoding, and the
CPU governor that lowers Opus complexity under load (deterministic: inline encoding, fake loads)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from voice.audio.base import FRAME_BYTES
from voice.audio.sources import ToneSource
from voice.media.clock import CHUNK, STALL_BUDGET, MediaClock, encode_chunk, frames_within
from voice.media.opus import OpusDecoder, OpusEncoder, OpusSettings
from voice.media.overuse import LEVELS, ComplexityGovernor
from voice.media.sender import RtpSender, rtp_packet

# -- the governor (pure) ---------------------------------------------------------------------


def test_governor_steps_down_under_load_and_back_up_after_recovery() -> None:
    gov = ComplexityGovernor(period=0.02, workers=1)
    assert gov.complexity == LEVELS[0] == 9
    for _ in range(200):  # 20 frames at 0.9 ms each: 90 % of the tick budget
        gov.observe(20, 0.018, 0.0)
    assert gov.complexity < 9 and gov.steps_down >= 1
    lowest = gov.complexity
    for _ in range(2000):  # the load is gone: two frames, cheap
        gov.observe(2, 0.0005, 0.0)
    assert gov.complexity == 9 and gov.steps_up >= 1
    assert lowest in LEVELS


def test_governor_steps_down_when_ticks_fire_late_even_if_encoding_is_cheap() -> None:
    gov = ComplexityGovernor(period=0.02, workers=1, late_count=3, late_window=50)
    for i in range(60):
        gov.observe(2, 0.001, 0.012 if i % 10 == 0 else 0.0)  # every 10th tick 12 ms late
    assert gov.complexity < 9


def test_governor_holds_its_level_while_load_stays_in_between() -> None:
    gov = ComplexityGovernor(period=0.02, workers=1, high=0.7, low=0.45)
    for _ in range(100):
        gov.observe(20, 0.018, 0.0)  # overload: at least one step down
    level = gov.complexity
    steps = gov.steps_down
    per_frame = 0.018 / 20 * 0.72  # complexity 7 costs ~72 % of 9
    for _ in range(3000):  # usage ~0.5 at this level: neither over nor clearly under
        gov.observe(int(0.5 * 0.02 / per_frame), 0.5 * 0.02, 0.0)
    assert gov.steps_down == steps and gov.complexity == level


def test_governor_refuses_bad_ladders() -> None:
    with pytest.raises(ValueError):
        ComplexityGovernor(levels=(1, 5, 9))
    with pytest.raises(ValueError):
        ComplexityGovernor(high=0.3, low=0.5)


# -- the clock -------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_every_member_gets_a_tick_at_once_and_late_members_skip_ahead() -> None:
    loop = asyncio.get_running_loop()
    t = FakeTime()
    clock = MediaClock(loop, clock=t)
    assert clock.join() == (0, 100.0)  # anchors the grid now
    t.now = 100.013
    assert clock.join() == (0, 100.0)  # a later member sends now, on the newest tick fired
    t.now = 100.0 + 0.02 + 0.005  # tick 1 is 5 ms overdue: given at once, nothing skipped
    index, deadline = await clock.tick(0)
    assert index == 1 and deadline == pytest.approx(100.02)
    t.now = 100.0 + 0.02 * 5 + 0.001  # last=1 but tick 2 is 61 ms overdue: skip to tick 5
    index, deadline = await clock.tick(1)
    assert index == 5 and deadline == pytest.approx(100.10)
    clock.leave()
    clock.leave()
    assert clock.members == 0 and clock.join() == (0, t.now)  # grid forgotten, re-anchored
    clock.leave()


async def test_waiting_members_share_one_timer_tick() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, period=0.01)
    clock.join()
    clock.join()
    got = await asyncio.gather(clock.tick(0), clock.tick(0), clock.tick(0))
    assert len(set(got)) == 1 and got[0][0] >= 1  # the same tick for all three
    clock.leave()
    clock.leave()
    assert clock._timer is None  # no timer left behind


async def test_batched_encoding_matches_direct_encoding_and_applies_the_governors_level() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)  # inline: encodes on this thread, deterministic
    frames = [await ToneSource(300.0 + 100 * i).read_frame() for i in range(10)]
    assert all(f is not None and len(f) == FRAME_BYTES for f in frames)
    batched = [OpusEncoder() for _ in frames]
    direct = [OpusEncoder() for _ in frames]
    out = await asyncio.gather(*(clock.encode(e, f) for e, f in zip(batched, frames, strict=True)))  # type: ignore[arg-type]
    want = [e.encode(f) for e, f in zip(direct, frames, strict=True)]  # type: ignore[arg-type]
    assert out == want  # same state, same bytes: batching changes nothing but the thread
    clock.governor._index = LEVELS.index(5)  # as if the process had been overloaded
    capped = OpusEncoder(OpusSettings(complexity=3))
    await clock.encode(batched[0], frames[0])  # type: ignore[arg-type]
    await clock.encode(capped, frames[0])  # type: ignore[arg-type]
    assert batched[0].complexity == 5  # lowered by the governor
    assert capped.complexity == 3  # never raised above its own setting


def test_a_closed_encoder_fails_only_its_own_frame() -> None:
    good, gone = OpusEncoder(), OpusEncoder()
    gone.close()
    payloads, busy = encode_chunk([(good, bytes(FRAME_BYTES)), (gone, bytes(FRAME_BYTES))], 9)
    assert isinstance(payloads[0], bytes) and len(payloads[0]) == 100
    assert isinstance(payloads[1], Exception) and busy >= 0.0


async def test_clocked_sender_paces_on_the_grid_with_a_worker_thread() -> None:
    import concurrent.futures

    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        clock = MediaClock(loop, executor=pool)
        sent: list[tuple[float, bytes]] = []

        async def send_rtp(data: bytes) -> None:
            sent.append((loop.time(), data))

        sender = RtpSender(
            source=ToneSource(440.0),
            encoder=OpusEncoder(),
            send_rtp=send_rtp,
            ssrc=7,
            initial_seq=65_534,
            initial_timestamp=0,
            initial_loss_perc=0,
        )
        task = asyncio.create_task(sender.run_clocked(clock))
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert clock.members == 0
    assert len(sent) >= 15
    seqs = [int.from_bytes(d[2:4], "big") for _, d in sent]
    stamps = [int.from_bytes(d[4:8], "big") for _, d in sent]
    for (s0, t0), (s1, t1) in itertools.pairwise(zip(seqs, stamps, strict=True)):
        assert s1 == (s0 + 1) & 0xFFFF
        assert (t1 - t0) % 960 == 0 and t1 > t0  # whole frames (more only after a skip)
    assert stamps[-1] - stamps[0] == 960 * (len(sent) - 1 + sender.ticks_skipped)
    payload = sent[3][1][12:]
    assert len(payload) == 100 and len(OpusDecoder().decode(payload)) == FRAME_BYTES


async def test_chunks_finished_together_reach_the_loop_in_one_wake_up_in_order() -> None:
    """Worker results are handed to the loop in batches (one ``call_soon_threadsafe`` for all
    the chunks that finished meanwhile), each frame still gets its own bytes, in order."""
    import concurrent.futures

    loop = asyncio.get_running_loop()
    wakeups = 0
    threadsafe = loop.call_soon_threadsafe

    def counting(*args: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return threadsafe(*args)

    frames = [await ToneSource(300.0 + 100 * i).read_frame() for i in range(6)]
    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr(loop, "call_soon_threadsafe", counting)
        clock = MediaClock(loop, executor=pool, chunk=2)  # three chunks, one job
        encoders = [OpusEncoder() for _ in frames]
        waiting = [
            asyncio.ensure_future(clock.encode(e, f))  # type: ignore[arg-type]
            for e, f in zip(encoders, frames, strict=True)
        ]
        for _ in range(2):  # the waiters queue their frames, then the flush submits 3 jobs
            await asyncio.sleep(0)
        busy_loop(0.3)  # the loop is busy meanwhile: all three finish before it looks
        out = await asyncio.gather(*waiting)
    assert wakeups == 1
    direct = [OpusEncoder().encode(f) for f in frames]  # type: ignore[arg-type]
    assert out == direct


def busy_loop(seconds: float) -> None:
    """Keep the event loop's thread busy (what a loaded loop does to the workers' results)."""
    time.sleep(seconds)


def test_rtp_header_is_what_aiortc_would_serialise() -> None:
    from aiortc.rtp import RtpPacket

    ours = rtp_packet(marker=True, seq=65535, timestamp=2**32 - 1, ssrc=0xDEADBEEF, payload=b"x")
    theirs = RtpPacket(
        payload_type=111,
        marker=1,
        sequence_number=65535,
        timestamp=2**32 - 1,
        ssrc=0xDEADBEEF,
        payload=b"x",
    ).serialize()
    assert ours == theirs


async def test_a_worker_takes_no_frame_of_an_encoder_another_worker_is_encoding() -> None:
    """A queue that outran the workers holds several frames of one encoder: a worker skips
    the frames of an encoder another worker is encoding, and every later frame of an encoder
    with one left waiting (two workers racing for one state would change its bytes)."""
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, workers=2, chunk=3)
    x, y, z = OpusEncoder(), OpusEncoder(), OpusEncoder()
    pcm = bytes(FRAME_BYTES)
    clock._queue = [(e, pcm, loop.create_future()) for e in (x, y, x, z, y, z, x)]
    clock._encoding = {y}  # another worker has y's frame
    chunk = clock._take_chunk()
    assert [job[0] for job in chunk] == [x, x, z]  # chunk full: z's second frame waits
    assert [job[0] for job in clock._queue] == [y, y, z, x]  # in their order
    assert clock._encoding == {x, y, z}
    assert clock._take_chunk() == []  # every queued encoder is busy elsewhere: nothing taken


async def test_two_workers_hand_every_frame_its_own_bytes_in_order() -> None:
    import concurrent.futures

    loop = asyncio.get_running_loop()
    source = ToneSource(440.0)
    frames = [await source.read_frame() for _ in range(300)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        clock = MediaClock(loop, executor=pool, workers=2, chunk=1)
        encoder = OpusEncoder()
        waiting = [asyncio.ensure_future(clock.encode(encoder, f)) for f in frames]  # type: ignore[arg-type]
        out = await asyncio.wait_for(asyncio.gather(*waiting), 20)
    direct = OpusEncoder()
    assert out == [direct.encode(f) for f in frames]  # type: ignore[arg-type]
    assert clock._encoding == set() and clock._queue == [] and clock._running == 0


def test_one_call_encodes_no_longer_than_the_loop_may_wait_for_an_encoders_lock() -> None:
    assert frames_within(STALL_BUDGET, 9) * 0.0009 <= STALL_BUDGET  # 4 frames at 9
    assert frames_within(STALL_BUDGET, 1) >= CHUNK  # cheap frames: a full chunk
    assert frames_within(STALL_BUDGET, 9) < frames_within(STALL_BUDGET, 5)


async def test_a_worker_that_fails_frees_its_slot_and_its_encoders() -> None:
    import concurrent.futures

    loop = asyncio.get_running_loop()
    source = ToneSource(440.0)
    frames = [await source.read_frame() for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        clock = MediaClock(loop, executor=pool, workers=1)
        encoder = OpusEncoder()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(clock, "_post", lambda futures, result: 1 / 0)  # a bug, once
            lost = asyncio.ensure_future(clock.encode(encoder, frames[0]))  # type: ignore[arg-type]
            for _ in range(3):
                await asyncio.sleep(0.05)
        assert clock._running == 0 and clock._encoding == set()  # nothing held for ever
        lost.cancel()
        again = await asyncio.wait_for(clock.encode(encoder, frames[1]), 5)  # type: ignore[arg-type]
    assert isinstance(again, bytes) and again  # a new worker was started
