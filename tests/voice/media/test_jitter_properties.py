"""Hypothesis properties of the jitter buffer under any arrival order, loss and duplication."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.voice.media.test_jitter import FRAME, SPF, index, payload
from voice.media.jitter import Conceal, JitterBuffer, Play, RecoverWithFec, Wait

# per frame: the network delays of its copies (none = lost, two = duplicated)
copies = st.lists(st.floats(min_value=0.0, max_value=0.25), min_size=0, max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    deliveries=st.lists(copies, min_size=1, max_size=120),
    seq0=st.integers(0, 0xFFFF),
    ts0=st.integers(0, 0xFFFF_FFFF),
    phase=st.floats(min_value=0.0, max_value=FRAME, exclude_max=True),
    silences=st.lists(st.booleans(), min_size=1, max_size=40),
    min_delay=st.integers(1, 3),
    extra=st.integers(0, 7),
)
def test_any_pattern_plays_each_frame_at_most_once_and_in_order(
    deliveries: list[list[float]],
    seq0: int,
    ts0: int,
    phase: float,
    silences: list[bool],
    min_delay: int,
    extra: int,
) -> None:
    jb = JitterBuffer(min_delay_frames=min_delay, max_delay_frames=min_delay + extra)
    events = sorted((k * FRAME + d, k) for k, delays in enumerate(deliveries) for d in delays)
    n_ticks = len(deliveries) + 30
    played: list[int] = []
    started = False
    i = 0
    for t in range(n_ticks):
        now = phase + t * FRAME
        while i < len(events) and events[i][0] <= now:
            at, k = events[i]
            jb.push(seq=seq0 + k, timestamp=ts0 + k * SPF, payload=payload(k), arrival=at)
            i += 1
        decision = jb.pop(now)  # never raises; one decision per tick
        assert isinstance(decision, Play | RecoverWithFec | Conceal | Wait)
        if isinstance(decision, Wait):
            assert not started, "Wait only before playout starts"
            continue
        started = True
        if isinstance(decision, Play):
            k = index(decision.payload)
            assert not played or k > played[-1], "played twice or out of order"
            played.append(k)
            jb.note_silence(silences[k % len(silences)])
        elif isinstance(decision, RecoverWithFec):
            k = index(decision.next_payload)
            assert not played or k - 1 > played[-1]  # rebuilds a frame after the last played
    s = jb.stats
    assert s.current_depth_frames >= 0
    assert s.received + s.duplicates + s.late == len(events)
    assert s.fec_recovered <= s.lost
    assert len(played) == s.played


@settings(max_examples=200, deadline=None)
@given(
    packets=st.lists(
        st.tuples(
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFF_FFFF),
            st.floats(min_value=0.0, max_value=0.1),
            st.booleans(),
        ),
        max_size=200,
    ),
)
def test_arbitrary_headers_never_raise_and_never_replay_a_payload(
    packets: list[tuple[int, int, float, bool]],
) -> None:
    """Any authenticated peer could send any header: the buffer stays bounded and sane."""
    jb = JitterBuffer(capacity_frames=30, max_delay_frames=10)
    now = 0.0
    seen: set[bytes] = set()
    for n, (seq, ts, dt, tick) in enumerate(packets):
        now += dt
        jb.push(seq=seq, timestamp=ts, payload=b"p%d" % n, arrival=now)
        assert len(jb._packets) <= 30
        if tick:
            decision = jb.pop(now)
            if isinstance(decision, Play):
                assert decision.payload not in seen
                seen.add(decision.payload)
            jb.note_silence(n % 3 == 0)
    for _ in range(40):
        now += FRAME
        decision = jb.pop(now)
        if isinstance(decision, Play):
            assert decision.payload not in seen
            seen.add(decision.payload)
