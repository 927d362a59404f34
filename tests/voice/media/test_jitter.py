"""Unit tests of the adaptive jitter buffer, driven by a deterministic network simulation.

The simulation sends frame ``k`` at ``k * 20 ms`` on the sender's clock, delivers it (or not)
after a chosen delay, and runs a 20 ms playout clock that pops one decision per tick. Payloads
carry the frame index so every test can say exactly which frame was played.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from voice.media.jitter import Conceal, JitterBuffer, Play, Playout, RecoverWithFec, Wait

FRAME = 0.020
SPF = 960


def payload(k: int) -> bytes:
    return b"frame-%d" % k


def index(data: bytes) -> int:
    return int(data.split(b"-")[1])


@dataclass
class Tick:
    time: float
    decision: Playout
    silent_before: bool  # the flag the buffer saw when it decided
    stats_delta: dict[str, int] = field(default_factory=dict)
    target: int = 0  # target_delay_frames after the decision
    delay_ms: float = 0.0


@dataclass
class Run:
    ticks: list[Tick]
    jb: JitterBuffer
    arrivals: dict[int, float]

    def decisions(self) -> list[Playout]:
        return [t.decision for t in self.ticks]

    def played(self) -> list[int]:
        return [index(t.decision.payload) for t in self.ticks if isinstance(t.decision, Play)]

    def first_play(self) -> Tick:
        return next(t for t in self.ticks if isinstance(t.decision, Play))


def simulate(
    frames: int,
    *,
    delay: Callable[[int], float | Sequence[float] | None] = lambda k: 0.005,
    sender_rate: float = 1.0,
    phase: float = 0.0123,
    silent: Callable[[int], bool] = lambda k: False,
    seq0: int = 1000,
    ts0: int = 123_456,
    extra_ticks: int = 0,
    jb: JitterBuffer | None = None,
) -> Run:
    """Send ``frames`` frames; ``delay(k)`` is the network delay of frame k (None: lost; a
    sequence: duplicates). ``sender_rate`` > 1 means the sender's clock runs fast."""
    jb = jb or JitterBuffer()
    events: list[tuple[float, int]] = []
    for k in range(frames):
        d = delay(k)
        sent = k * FRAME / sender_rate
        for one in [] if d is None else [d] if isinstance(d, float | int) else d:
            events.append((sent + one, k))
    events.sort()
    arrivals: dict[int, float] = {}
    ticks: list[Tick] = []
    i = 0
    last_silent = False
    n_ticks = int(frames / sender_rate) + extra_ticks
    for t in range(n_ticks):
        now = phase + t * FRAME
        while i < len(events) and events[i][0] <= now:
            at, k = events[i]
            arrivals.setdefault(k, at)
            jb.push(
                seq=(seq0 + k) & 0xFFFF,
                timestamp=(ts0 + k * SPF) & 0xFFFF_FFFF,
                payload=payload(k),
                arrival=at,
            )
            i += 1
        before = vars(jb.stats).copy()
        decision = jb.pop(now)
        delta = {k: v - before[k] for k, v in vars(jb.stats).items() if isinstance(v, int)}
        ticks.append(
            Tick(now, decision, last_silent, delta, jb.stats.target_delay_frames, jb.stats.delay_ms)
        )
        if isinstance(decision, Play | RecoverWithFec):
            k = index(decision.payload if isinstance(decision, Play) else decision.next_payload)
            last_silent = silent(k if isinstance(decision, Play) else k - 1)
            jb.note_silence(last_silent)
    return Run(ticks, jb, arrivals)


def test_startup_on_a_clean_link_buffers_at_most_one_frame() -> None:
    run = simulate(200, delay=lambda k: 0.005)
    first = run.first_play()
    held = first.time - run.arrivals[0]
    assert 0 <= held < FRAME + 0.002 + 1e-9  # the first tick after arrival (+ the 2 ms guard)
    assert all(isinstance(d, Wait) for d in run.decisions()[: run.ticks.index(first)])
    assert run.played() == list(range(200))
    assert run.jb.stats.concealed == 0 and run.jb.stats.lost == 0
    assert run.jb.stats.target_delay_frames == 1


def test_every_played_frame_is_held_less_than_a_frame_on_a_clean_link() -> None:
    run = simulate(300, delay=lambda k: 0.005, phase=0.0171)
    holds = [
        t.time - run.arrivals[index(t.decision.payload)]
        for t in run.ticks
        if isinstance(t.decision, Play)
    ]
    assert max(holds) < FRAME + 0.002 + 1e-9


def test_reordered_packets_are_played_in_order() -> None:
    # frames 2k+1 overtake frames 2k by 5 ms, both well before their tick
    run = simulate(200, delay=lambda k: 0.012 if k % 2 == 0 else 0.001, phase=0.019)
    assert run.played() == list(range(200))
    assert run.jb.stats.lost == 0 and run.jb.stats.late == 0


def test_duplicates_are_ignored_and_counted() -> None:
    run = simulate(100, delay=lambda k: [0.005, 0.007] if k % 3 == 0 else 0.005)
    assert run.played() == list(range(100))
    assert run.jb.stats.duplicates == 34
    assert run.jb.stats.received == 100


def test_a_duplicate_is_known_for_the_last_four_capacities_of_numbers_and_no_longer() -> None:
    """The seen-numbers window (a set beside the deque since the scaling work) forgets exactly
    what the deque forgets: the oldest number once 4 * capacity newer ones arrived."""
    jb = JitterBuffer(capacity_frames=5, max_delay_frames=5)  # remembers the last 20 numbers
    for k in range(21):
        jb.push(seq=k, timestamp=k * SPF, payload=payload(k), arrival=k * FRAME)
    jb.push(seq=1, timestamp=SPF, payload=payload(1), arrival=21 * FRAME)  # 20 newer: known
    assert jb.stats.duplicates == 1
    jb.push(seq=0, timestamp=0, payload=payload(0), arrival=21 * FRAME)  # 21 newer: forgotten
    assert jb.stats.duplicates == 1 and jb.stats.received == 22
    jb.push(seq=0, timestamp=0, payload=payload(0), arrival=22 * FRAME)  # ... and seen again
    assert jb.stats.duplicates == 2


def test_single_loss_is_recovered_with_fec_from_the_successor() -> None:
    run = simulate(300, delay=lambda k: None if k in (50, 150) else 0.005, extra_ticks=3)
    decisions = run.decisions()
    fec = [d for d in decisions if isinstance(d, RecoverWithFec)]
    assert [index(d.next_payload) for d in fec] == [51, 151]
    # the first loss finds the buffer empty: one concealed frame, after which the buffer keeps
    # one frame more (losses are recent), so the second loss needs no concealment at all
    i51, i151 = (decisions.index(d) for d in fec)
    assert isinstance(decisions[i51 - 1], Conceal)
    assert decisions[i151 - 1] == Play(payload(149))
    assert decisions[i151 + 1] == Play(payload(151))
    assert run.played() == [k for k in range(300) if k not in (50, 150)]
    assert run.jb.stats.lost == 2 and run.jb.stats.fec_recovered == 2
    assert run.jb.stats.target_delay_frames == 2


def test_loss_with_successor_already_buffered_needs_no_concealment() -> None:
    jb = JitterBuffer(min_delay_frames=2)
    run = simulate(100, delay=lambda k: None if k == 40 else 0.005, jb=jb)
    assert run.jb.stats.concealed == 0
    assert RecoverWithFec(payload(41)) in run.decisions()


def test_burst_loss_is_concealed_then_fec_for_the_last_frame() -> None:
    lost = set(range(100, 105))
    run = simulate(300, delay=lambda k: None if k in lost else 0.005)
    d = run.decisions()
    i = d.index(RecoverWithFec(payload(105)))
    assert all(isinstance(x, Conceal) for x in d[i - 5 : i])  # PLC while nothing arrives
    assert d[i + 1] == Play(payload(105))
    assert run.jb.stats.lost == 5 and run.jb.stats.fec_recovered == 1
    # the burst costs at most one frame of extra delay, not five
    hold = [
        t.time - run.arrivals[index(t.decision.payload)]
        for t in run.ticks[i + 1 :]
        if isinstance(t.decision, Play)
    ]
    assert max(hold) < 2 * FRAME + 0.002 + 1e-9


def test_late_packet_is_counted_and_never_played() -> None:
    run = simulate(200, delay=lambda k: 0.150 if k == 60 else 0.005)
    assert 60 not in run.played()
    assert run.jb.stats.late == 1
    assert run.jb.stats.lost == 1
    assert run.played() == sorted(run.played())


def test_sequence_and_timestamp_wraparound() -> None:
    run = simulate(300, seq0=65_500, ts0=(1 << 32) - 50 * SPF)
    assert run.played() == list(range(300))
    assert run.jb.stats.lost == 0 and run.jb.stats.resets == 0


def test_loss_across_the_sequence_wrap_uses_fec() -> None:
    # frame 36 has seq 0 (65500 + 36 = 65536)
    run = simulate(100, seq0=65_500, delay=lambda k: None if k == 36 else 0.005, extra_ticks=3)
    assert RecoverWithFec(payload(37)) in run.decisions()
    assert run.played() == [k for k in range(100) if k != 36]


def test_target_grows_with_jitter_then_decays_slowly() -> None:
    rng = random.Random(7)
    calm, rough = 250, 750  # 5 s clean, 15 s with up to 60 ms of random extra delay, then clean

    def delay(k: int) -> float:
        return 0.005 + (rng.uniform(0, 0.060) if calm <= k < calm + rough else 0.0)

    run = simulate(calm + rough + 1500, delay=delay, silent=lambda k: (k // 25) % 3 == 2)
    by_frame = {index(t.decision.payload): t for t in run.ticks if isinstance(t.decision, Play)}
    assert by_frame[calm - 10].target == 1
    assert by_frame[calm + rough - 10].target >= 3  # grew with the jitter
    late_in_rough = run.jb.stats.late
    assert late_in_rough < 0.10 * rough  # and covered most of it
    # after the jitter stops the target does not drop at once, but comes back within seconds
    assert by_frame[calm + rough + 25].target >= 2
    assert by_frame[calm + rough + 1400].target <= 2
    assert run.ticks[-1].delay_ms < 2 * FRAME * 1000 + 5  # the delay itself came back down


def test_huge_sequence_jump_resets_instead_of_concealing_thousands() -> None:
    jb = JitterBuffer()
    first = simulate(100, jb=jb)
    assert first.played() == list(range(100))
    base = first.ticks[-1].time + FRAME
    # the sender restarts: new sequence numbers and timestamps
    for k in range(50):
        at = base + k * FRAME + 0.005
        while first.ticks[-1].time + FRAME <= at:
            now = first.ticks[-1].time + FRAME
            first.ticks.append(Tick(now, jb.pop(now), False))
        jb.push(seq=(40_000 + k), timestamp=999 + k * SPF, payload=payload(1000 + k), arrival=at)
    assert jb.stats.resets == 1
    assert jb.stats.concealed < 30  # only the ticks while nothing arrived
    assert jb.stats.lost == 0
    played = [index(t.decision.payload) for t in first.ticks if isinstance(t.decision, Play)]
    assert played[100:] == list(range(1000, 1000 + len(played) - 100))
    assert len(played) >= 140


def test_capacity_bounds_the_buffer_when_nobody_pops() -> None:
    jb = JitterBuffer(capacity_frames=20, max_delay_frames=10)
    for k in range(500):
        jb.push(seq=k, timestamp=k * SPF, payload=payload(k), arrival=k * FRAME)
    decision = jb.pop(500 * FRAME)
    assert isinstance(decision, Play)
    assert index(decision.payload) >= 480
    assert jb.stats.dropped >= 480


def test_overflow_while_playing_is_bounded() -> None:
    # the network freezes for 2 s and then delivers everything at once
    run = simulate(400, delay=lambda k: max(0.005, 3.0 - k * FRAME) if 50 <= k < 150 else 0.005)
    assert run.jb.stats.current_depth_frames <= 50
    assert run.played() == sorted(run.played())
    assert run.jb.stats.delay_ms < 15 * FRAME * 1000  # caught up (hard limit) by the end


def test_wait_only_before_playout_starts() -> None:
    run = simulate(200, delay=lambda k: None if 80 <= k < 120 else 0.005, extra_ticks=5)
    d = run.decisions()
    first = d.index(run.first_play().decision)
    assert not any(isinstance(x, Wait) for x in d[first:])
    assert isinstance(run.jb.pop(100.0), Conceal)  # long after the stream ended: PLC, not Wait
