"""tests/support/impair/schedule.py: the stage's per-packet decisions, on a simulated clock."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.impair.schedule import Counters, Profile, Scheduler

Out = list[tuple[float, int]]  # (departure time, sequence number)


def packet(seq: int, size: int = 100) -> bytes:
    return seq.to_bytes(4, "big") + bytes(size - 4)


def simulate(
    profile: Profile, n: int, *, spacing: float = 0.02, size: int = 100, seed: int = 1
) -> tuple[Out, Counters]:
    """``n`` packets, one every ``spacing`` s, released exactly when due (as the runner does)."""
    s = Scheduler(profile, seed=seed)
    out: Out = []

    def drain(until: float) -> None:
        while (t := s.next_due()) is not None and t <= until:
            out.extend((t, int.from_bytes(p[:4], "big")) for p in s.release(t))

    for i in range(n):
        drain(i * spacing)
        s.arrive(packet(i, size), i * spacing)
    drain(math.inf)
    assert s.pending == 0
    return out, s.counters


def delays_ms(out: Out, spacing: float = 0.02) -> list[float]:
    return [1000 * (t - seq * spacing) for t, seq in out]


def late_arrivals(out: Out) -> int:
    """Packets that leave after a higher-numbered one (what a receiver sees as reordered)."""
    highest, late = -1, 0
    for _, seq in out:
        if seq < highest:
            late += 1
        highest = max(highest, seq)
    return late


def loss_runs(out: Out, n: int) -> list[int]:
    got = {seq for _, seq in out}
    runs, current = [], 0
    for seq in range(n):
        if seq not in got:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_clean_profile_passes_everything_at_once_in_order() -> None:
    out, c = simulate(Profile(), 1000)
    assert [seq for _, seq in out] == list(range(1000))
    assert delays_ms(out) == [0.0] * 1000
    assert c == Counters(arrived=1000, released=1000)


def test_delay_and_jitter_stay_in_bounds_and_are_uniform() -> None:
    out, _ = simulate(Profile(delay_ms=40, jitter_ms=20), 20_000)
    d = delays_ms(out)
    assert min(d) >= 20 - 1e-6 and max(d) <= 60 + 1e-6
    assert statistics.mean(d) == pytest.approx(40, abs=0.3)
    assert statistics.stdev(d) == pytest.approx(20 / math.sqrt(3), rel=0.03)  # uniform ±20
    assert late_arrivals(out) > 0.1 * len(out)  # jitter of ±20 ms over 20 ms spacing reorders


def test_ordered_jitter_never_reorders() -> None:
    out, _ = simulate(Profile(delay_ms=40, jitter_ms=20, ordered=True), 5000)
    assert [seq for _, seq in out] == list(range(5000))
    assert min(delays_ms(out)) >= 20 - 1e-6


def test_jitter_larger_than_delay_is_clipped_at_zero() -> None:
    out, _ = simulate(Profile(delay_ms=5, jitter_ms=20), 5000)
    d = delays_ms(out)
    assert min(d) == 0.0 and max(d) <= 25 + 1e-6


def test_random_loss_rate() -> None:
    out, c = simulate(Profile(loss=0.1), 20_000)
    assert c.lost == 20_000 - len(out)
    assert c.lost / 20_000 == pytest.approx(0.1, abs=0.01)
    assert statistics.mean(loss_runs(out, 20_000)) < 1.2  # independent: few back-to-back


def test_gilbert_elliott_loss_comes_in_bursts() -> None:
    out, c = simulate(Profile(loss=0.05, loss_burst=3), 50_000)
    assert c.lost / 50_000 == pytest.approx(0.05, abs=0.01)
    assert statistics.mean(loss_runs(out, 50_000)) == pytest.approx(3.0, rel=0.12)


def test_duplicates_are_identical_copies() -> None:
    out, c = simulate(Profile(duplicate=0.05, delay_ms=10), 20_000)
    assert len(out) == 20_000 + c.duplicated
    assert c.duplicated / 20_000 == pytest.approx(0.05, abs=0.006)
    seqs = [seq for _, seq in out]
    assert len(set(seqs)) == 20_000


def test_reordered_packets_come_gap_places_later() -> None:
    out, c = simulate(Profile(delay_ms=10, reorder=0.05, reorder_gap=2), 20_000)
    seqs = [seq for _, seq in out]
    assert sorted(seqs) == list(range(20_000))
    assert c.reordered / 20_000 == pytest.approx(0.05, abs=0.006)
    # Held packets are (mostly) isolated: each lands exactly two places after where it was.
    displaced = [pos - seq for pos, seq in enumerate(seqs) if pos > seq]
    assert len(displaced) == pytest.approx(c.reordered, rel=0.1)
    moved = {seq: seqs.index(seq) for seq in range(20_000) if seqs.index(seq) > seq}
    assert statistics.median(pos - seq for seq, pos in moved.items()) == 2


def test_a_held_packet_leaves_after_the_hold_time_if_nothing_follows() -> None:
    s = Scheduler(Profile(delay_ms=10, reorder=1.0, reorder_hold_ms=50), seed=1)
    s.arrive(packet(0), 0.0)
    assert s.release(0.0105) == []
    due = s.next_due()
    assert due is not None
    assert due == pytest.approx(0.060)
    assert s.release(0.0599) == []
    assert s.release(due) == [packet(0)]


def test_rate_limit_paces_and_tail_drops() -> None:
    # 1000-byte packets every 4 ms (2 Mbit/s) into a 1 Mbit/s link with 100 ms of queue.
    profile = Profile(rate_kbit=1000, queue_ms=100)
    out, c = simulate(profile, 2500, spacing=0.004, size=1000)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(out)]
    assert min(gaps) == pytest.approx(0.008)  # 1000 bytes at 1 Mbit/s: 8 ms each
    duration = out[-1][0] - out[0][0]
    assert 1000 * 8 * (len(out) - 1) / duration == pytest.approx(1_000_000, rel=0.001)
    assert c.queue_dropped / 2500 == pytest.approx(0.5, abs=0.02)
    assert max(delays_ms(out, 0.004)) <= 100 + 8 + 1e-6  # queue limit + own serialization


def test_rate_limit_below_capacity_costs_only_serialization() -> None:
    out, c = simulate(Profile(rate_kbit=1000, delay_ms=5), 1000, size=1000)
    assert c.queue_dropped == 0
    assert delays_ms(out) == pytest.approx([13.0] * 1000)  # 8 ms on the wire + 5 ms


def test_same_seed_same_fate_other_seed_other_fate() -> None:
    profile = Profile(delay_ms=30, jitter_ms=10, loss=0.05, loss_burst=2, duplicate=0.02,
                      reorder=0.02, rate_kbit=500)  # fmt: skip
    first, _ = simulate(profile, 3000, seed=5)
    assert simulate(profile, 3000, seed=5)[0] == first
    assert simulate(profile, 3000, seed=6)[0] != first


def test_reconfigure_keeps_packets_in_flight() -> None:
    s = Scheduler(Profile(delay_ms=100), seed=1)
    s.arrive(packet(0), 0.0)
    s.configure(Profile(delay_ms=10), seed=2)
    s.arrive(packet(1), 0.001)
    assert s.release(0.011) == [packet(1)]
    assert s.release(0.1) == [packet(0)]


@pytest.mark.parametrize(
    "bad",
    [{"loss": 1.5}, {"duplicate": -0.1}, {"reorder": 2.0}, {"delay_ms": -1},
     {"jitter_ms": -1}, {"reorder_gap": 0}, {"rate_kbit": 0}, {"loss_burst": 0.5, "loss": 0.1},
     {"loss": 1.0, "loss_burst": 3}],
)  # fmt: skip
def test_invalid_profiles_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Profile(**bad)  # type: ignore[arg-type]


def test_profile_json_round_trip_and_unknown_fields() -> None:
    profile = Profile(delay_ms=40, jitter_ms=20, loss=0.05, loss_burst=3, rate_kbit=64)
    assert Profile.from_json(profile.to_json()) == profile
    with pytest.raises(ValueError, match="unknown"):
        Profile.from_json({"delay": 40})


probabilities = st.floats(0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(
    delay=st.floats(0, 100),
    jitter=st.floats(0, 100),
    loss=st.floats(0.0, 0.99),
    burst=st.none() | st.floats(1, 10),
    duplicate=probabilities,
    reorder=probabilities,
    gap=st.integers(1, 5),
    rate=st.none() | st.floats(8, 10_000),
    ordered=st.booleans(),
    arrivals=st.lists(st.tuples(st.floats(0, 0.05), st.integers(20, 1500)), max_size=200),
)
def test_every_packet_is_accounted_for_and_never_leaves_early(
    delay: float, jitter: float, loss: float, burst: float | None, duplicate: float,
    reorder: float, gap: int, rate: float | None, ordered: bool,
    arrivals: list[tuple[float, int]],
) -> None:  # fmt: skip
    profile = Profile(delay_ms=delay, jitter_ms=jitter, loss=loss, loss_burst=burst,
                      duplicate=duplicate, reorder=reorder, reorder_gap=gap, rate_kbit=rate,
                      ordered=ordered)  # fmt: skip
    s = Scheduler(profile, seed=3)
    now, sent_at, released = 0.0, {}, []
    for i, (pause, size) in enumerate(arrivals):
        now += pause
        while (t := s.next_due()) is not None and t <= now:
            released += [(t, p) for p in s.release(t)]
        s.arrive(packet(i, size), now)
        sent_at[packet(i, size)] = now
    while (t := s.next_due()) is not None:
        released += [(t, p) for p in s.release(t)]
    c = s.counters
    assert c.arrived == len(arrivals)
    assert c.released == len(released) == c.arrived - c.lost + c.duplicated - c.queue_dropped
    lowest = max(0.0, delay - jitter) / 1000
    for t, p in released:
        assert t >= sent_at[p] + lowest - 1e-9
    if reorder == 0 and ordered:
        order = [p for _, p in released]
        assert order == sorted(order, key=lambda p: sent_at[p])
